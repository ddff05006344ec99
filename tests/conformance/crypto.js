// crypto.getRandomValues, randomUUID and crypto.subtle.
export default {
  async fetch() {
    const failures = [];
    const check = (name, cond) => { if (!cond) failures.push(name); };
    const enc = new TextEncoder();
    check("random values", crypto.getRandomValues(new Uint8Array(16)).some((b) => b !== 0));
    check("uuid", /^[0-9a-f-]{36}$/.test(crypto.randomUUID()));
    const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
    check("sha-256", hex(await crypto.subtle.digest("SHA-256", enc.encode("abc"))) === "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const hmacKey = await crypto.subtle.importKey("raw", enc.encode("key"), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    const mac = await crypto.subtle.sign("HMAC", hmacKey, enc.encode("The quick brown fox jumps over the lazy dog"));
    check("hmac", hex(mac) === "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    check("hmac verify", await crypto.subtle.verify("HMAC", hmacKey, mac, enc.encode("The quick brown fox jumps over the lazy dog")));
    const aes = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt", "decrypt"]);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, aes, enc.encode("secret"));
    check("aes-gcm", new TextDecoder().decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, aes, sealed)) === "secret");
    const ec = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, ec.privateKey, enc.encode("msg"));
    check("ecdsa", await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, ec.publicKey, sig, enc.encode("msg")));
    const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const edSig = await crypto.subtle.sign("Ed25519", ed.privateKey, enc.encode("msg"));
    check("ed25519", await crypto.subtle.verify("Ed25519", ed.publicKey, edSig, enc.encode("msg")));
    check("ed25519 rejects tampering", !(await crypto.subtle.verify("Ed25519", ed.publicKey, edSig, enc.encode("msh"))));
    return Response.json({ ok: failures.length === 0, failures }, { status: failures.length ? 500 : 200 });
  },
};
