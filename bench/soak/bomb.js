// Builds a gzip "zip bomb" of 64 MiB of zeros, then decompresses it and keeps the output.
export default { async fetch() {
  const zeros = new Uint8Array(1 << 20);
  const gz = new Blob([zeros]).stream().pipeThrough(new CompressionStream("gzip"));
  const one = new Uint8Array(await new Response(gz).arrayBuffer());
  const chunks = [];
  for (let i = 0; i < 64; i++) {
    for await (const c of new Blob([one]).stream().pipeThrough(new DecompressionStream("gzip"))) chunks.push(c);
  }
  return new Response(String(chunks.length));
} };
