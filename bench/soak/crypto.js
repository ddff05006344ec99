export default { async fetch() {
  const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "PBKDF2", false, ["deriveBits"]);
  const one = () => crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: new Uint8Array(16), iterations: 100000 }, key, 256);
  await Promise.all(Array.from({ length: 8 }, one));
  return new Response("derived");
} };
