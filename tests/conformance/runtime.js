// structuredClone, AbortController, EventTarget, timers, queueMicrotask,
// performance, Blob, console, WebAssembly, Intl; and no Deno.
export default {
  async fetch() {
    const failures = [];
    const check = (name, cond) => { if (!cond) failures.push(name); };
    const clone = structuredClone({ d: new Date(5), m: new Map([[1, 2]]) });
    check("structuredClone", clone.d.getTime() === 5 && clone.m.get(1) === 2);
    const moved = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer;
    const received = structuredClone(moved, { transfer: [moved] });
    check("structuredClone transfer detaches", moved.byteLength === 0 && received.byteLength === 8 && new Uint8Array(received)[7] === 8);
    const controller = new AbortController();
    let aborted = false;
    controller.signal.addEventListener("abort", () => { aborted = true; });
    controller.abort();
    check("abort", aborted && controller.signal.aborted);
    const target = new EventTarget();
    let got = null;
    target.addEventListener("ping", (e) => { got = e.detail; });
    target.dispatchEvent(new CustomEvent("ping", { detail: 7 }));
    check("events", got === 7);
    const order = [];
    queueMicrotask(() => order.push("micro"));
    await new Promise((r) => setTimeout(() => { order.push("timer"); r(); }, 1));
    check("microtask before timer", order.join() === "micro,timer");
    let ticks = 0;
    await new Promise((r) => { const id = setInterval(() => { if (++ticks === 3) { clearInterval(id); r(); } }, 1); });
    check("interval", ticks === 3);
    const t0 = performance.now();
    check("performance", typeof t0 === "number" && performance.now() >= t0 && typeof performance.timeOrigin === "number");
    check("blob", (await new Blob(["a", "b"]).text()) === "ab" && new Blob(["abc"]).size === 3);
    console.log("conformance console line");
    const wasm = new Uint8Array([0,97,115,109,1,0,0,0,1,7,1,96,2,127,127,1,127,3,2,1,0,7,7,1,3,97,100,100,0,0,10,9,1,7,0,32,0,32,1,106,11]);
    const { instance } = await WebAssembly.instantiate(wasm);
    check("webassembly", instance.exports.add(2, 3) === 5);
    check("intl", new Intl.DateTimeFormat("en-US", { timeZone: "UTC" }).format(new Date(0)) === "1/1/1970");
    check("no Deno", typeof Deno === "undefined");
    return Response.json({ ok: failures.length === 0, failures }, { status: failures.length ? 500 : 200 });
  },
};
