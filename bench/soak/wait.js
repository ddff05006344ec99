export default { fetch() { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000); return new Response("woke"); } };
