// A call-out function for scripts/bench-cluster.sh: fetches the local
// upstream (which answers after ~20 ms) and passes its body on.
export default {
  async fetch() {
    const upstream = await fetch("http://127.0.0.1:8796/");
    return new Response(await upstream.text());
  },
};
