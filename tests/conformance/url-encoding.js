// URL, URLSearchParams, URLPattern, TextEncoder/TextDecoder, atob/btoa.
export default {
  async fetch() {
    const failures = [];
    const check = (name, cond) => { if (!cond) failures.push(name); };
    const url = new URL("../c?d=1#e", "https://user@example.test/a/b");
    check("url resolve", url.href === "https://user@example.test/c?d=1#e");
    const params = new URLSearchParams("a=1&b=2&a=3");
    check("search params", params.getAll("a").join() === "1,3" && params.toString() === "a=1&b=2&a=3");
    const pattern = new URLPattern({ pathname: "/users/:id" });
    check("urlpattern", pattern.exec("https://x.test/users/42")?.pathname.groups.id === "42");
    check("text encoder", new TextEncoder().encode("é€").length === 5);
    check("text decoder", new TextDecoder().decode(new Uint8Array([0xe2, 0x82, 0xac])) === "€");
    check("utf-16", new TextDecoder("utf-16le").decode(new Uint8Array([0x41, 0x00])) === "A");
    check("base64", btoa("isola") === "aXNvbGE=" && atob("aXNvbGE=") === "isola");
    return Response.json({ ok: failures.length === 0, failures }, { status: failures.length ? 500 : 200 });
  },
};
