// A Workers-style handler: `isola invoke examples/worker.js --include`
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    return Response.json({ method: request.method, path: url.pathname });
  },
};
