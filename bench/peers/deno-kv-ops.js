// Deno KV (SQLite-backed, local) doing what kv-ops.js does in isola:
// N sequential sets, then N gets. deno run --unstable-kv --allow-read --allow-write deno-kv-ops.js DIR [N]
const dir = Deno.args[0];
const n = Number(Deno.args[1] ?? 490);
const kv = await Deno.openKv(`${dir}/deno-kv.sqlite`);
const t0 = performance.now();
for (let i = 0; i < n; i++) await kv.set(["key", i], `value ${i}`);
const t1 = performance.now();
for (let i = 0; i < n; i++) await kv.get(["key", i]);
const t2 = performance.now();
console.log(JSON.stringify({ n, put_per_s: Math.round(n / ((t1 - t0) / 1000)), get_per_s: Math.round(n / ((t2 - t1) / 1000)) }));
kv.close();
