// The upstream of the call-out functions: answers after 20 ms (deno serve).
export default {
  async fetch() {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return new Response("upstream");
  },
};
