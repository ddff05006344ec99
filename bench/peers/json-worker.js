// json-handler.js as a Workers fetch module (workerd, deno serve): parse the
// POSTed JSON, answer JSON.
export default {
  async fetch(request) {
    const p = await request.json();
    return Response.json({ hello: p.name, n: p.n + 1 });
  },
};
