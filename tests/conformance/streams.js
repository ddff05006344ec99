// ReadableStream, WritableStream, TransformStream; a streamed response body.
export default {
  async fetch() {
    const failures = [];
    const check = (name, cond) => { if (!cond) failures.push(name); };
    const upper = new TransformStream({ transform(chunk, c) { c.enqueue(chunk.toUpperCase()); } });
    const source = new ReadableStream({ start(c) { c.enqueue("a"); c.enqueue("b"); c.close(); } });
    let out = "";
    await source.pipeThrough(upper).pipeTo(new WritableStream({ write(chunk) { out += chunk; } }));
    check("pipe through transform", out === "AB");
    const [one, two] = new ReadableStream({ start(c) { c.enqueue(1); c.close(); } }).tee();
    check("tee", (await one.getReader().read()).value === 1 && (await two.getReader().read()).value === 1);
    const encoded = new ReadableStream({ start(c) { c.enqueue("x"); c.close(); } }).pipeThrough(new TextEncoderStream());
    check("text encoder stream", (await new Response(encoded).text()) === "x");
    if (failures.length) return Response.json({ ok: false, failures }, { status: 500 });
    const body = new ReadableStream({
      async pull(c) {
        c.enqueue(new TextEncoder().encode('{"ok":true,'));
        await new Promise((r) => setTimeout(r, 5));
        c.enqueue(new TextEncoder().encode('"streamed":true}'));
        c.close();
      },
    });
    return new Response(body, { headers: { "content-type": "application/json" } });
  },
};
