// KV throughput from inside a function: N sequential puts, then N gets.
export default async (payload, { env }) => {
  const n = payload?.n ?? 1000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await env.KV.put(`key:${i}`, `value ${i}`);
  const t1 = performance.now();
  for (let i = 0; i < n; i++) await env.KV.get(`key:${i}`);
  const t2 = performance.now();
  return { n, put_per_s: Math.round(n / ((t1 - t0) / 1000)), get_per_s: Math.round(n / ((t2 - t1) / 1000)) };
};
