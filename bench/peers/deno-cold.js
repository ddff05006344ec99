// Cold isolate start in Deno: new Worker -> first message -> result, N times sequentially.
const N = Number(Deno.args[0] ?? 200);
const url = new URL("./hello-json-worker.js", import.meta.url).href;
const times = [];
for (let i = 0; i < N; i++) {
  const t0 = performance.now();
  const w = new Worker(url, { type: "module" });
  const result = await new Promise((resolve, reject) => {
    w.onmessage = (e) => resolve(e.data);
    w.onerror = (e) => { e.preventDefault?.(); reject(e.message ?? e); };
    w.postMessage({ name: "world" });
  });
  const dt = performance.now() - t0;
  w.terminate();
  if (result?.hello !== "world") throw new Error("bad result: " + JSON.stringify(result));
  times.push(dt);
}
times.sort((a, b) => a - b);
const pct = (p) => times[Math.min(times.length - 1, Math.ceil((p / 100) * times.length) - 1)];
const r3 = (x) => Math.round(x * 1000) / 1000;
const mean = times.reduce((a, b) => a + b, 0) / times.length;
console.log(JSON.stringify({ n: N, p50_ms: r3(pct(50)), p99_ms: r3(pct(99)), mean_ms: r3(mean), min_ms: r3(times[0]), max_ms: r3(times[times.length - 1]) }));
