// The soak's attackers: LOOPS concurrent loops, each requesting the hostile
// functions in turn until SECONDS have passed (or 5,000 rounds), from one
// process. Usage: deno run --allow-net attack.js BASE TOKEN SECONDS LOOPS
const [base, token, seconds, loops] = Deno.args;
const deadline = Date.now() + Number(seconds) * 1000;
const upload = new Uint8Array(1 << 20);
const hostile = (Deno.env.get("HOSTILE") ?? "cpu,heap,native,bomb,logs,crypto,wait").split(",");
let requests = 0;
async function hit(url, init) {
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(40_000) });
    await response.arrayBuffer();
  } catch {
    // Refused or cut off: the node's answer to a hostile request.
  }
  requests++;
}
async function loop() {
  for (let round = 0; round < 5000 && Date.now() < deadline; round++) {
    for (const name of hostile) await hit(`${base}/fn/${name}/`);
    await hit(`${base}/fn/hello/`, { method: "POST", body: upload });
    await hit(`${base}/v1/functions/explode/invoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: "{}",
    });
  }
}
await Promise.all(Array.from({ length: Number(loops) }, loop));
console.log(`attackers made ${requests} requests`);
