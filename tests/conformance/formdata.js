// FormData: urlencoded and multipart, both ways.
export default {
  async fetch() {
    const failures = [];
    const check = (name, cond) => { if (!cond) failures.push(name); };
    const urlencoded = new Request("https://x.test/", { method: "POST", body: new URLSearchParams({ a: "1", b: "two words" }) });
    const form = await urlencoded.formData();
    check("urlencoded", form.get("a") === "1" && form.get("b") === "two words");
    const fd = new FormData();
    fd.append("name", "isola");
    fd.append("file", new File(["hello"], "hello.txt", { type: "text/plain" }));
    const multipart = new Request("https://x.test/", { method: "POST", body: fd });
    check("multipart content type", multipart.headers.get("content-type").startsWith("multipart/form-data; boundary="));
    const parsed = await multipart.formData();
    check("multipart field", parsed.get("name") === "isola");
    const file = parsed.get("file");
    check("multipart file", file instanceof File && file.name === "hello.txt" && (await file.text()) === "hello");
    return Response.json({ ok: failures.length === 0, failures }, { status: failures.length ? 500 : 200 });
  },
};
