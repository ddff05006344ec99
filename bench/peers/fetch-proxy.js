// A function that fetches a local upstream and returns its body
// (scripts/bench-fetch-proxy.sh). UPSTREAM is the upstream's URL.
const UPSTREAM = "http://127.0.0.1:8793/";

export default {
  async fetch() {
    const upstream = await fetch(UPSTREAM);
    return new Response(await upstream.text(), { status: upstream.status });
  },
};
