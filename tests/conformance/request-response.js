// Request, Response, Headers, and the request as the function receives it.
export default {
  async fetch(request) {
    const failures = [];
    const check = (name, cond) => { if (!cond) failures.push(name); };
    const h = new Headers({ "X-A": "1" });
    h.append("x-a", "2");
    check("headers combine", h.get("x-a") === "1, 2");
    check("headers iterate lowercase", [...h.keys()].join() === "x-a");
    const req = new Request("https://example.test/p?q=1", { method: "POST", body: "abc", headers: { "content-type": "text/plain" } });
    check("request body", (await req.clone().text()) === "abc");
    check("request url", new URL(req.url).searchParams.get("q") === "1");
    const res = Response.json({ a: 1 }, { status: 201 });
    check("response json", res.status === 201 && (await res.json()).a === 1);
    check("redirect", Response.redirect("https://example.test/x", 302).headers.get("location") === "https://example.test/x");
    check("incoming method", request.method === "GET");
    check("incoming url", new URL(request.url).pathname === "/");
    check("incoming header", request.headers.get("x-conformance") === "yes");
    return Response.json({ ok: failures.length === 0, failures }, { status: failures.length ? 500 : 200 });
  },
};
