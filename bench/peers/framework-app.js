// A Hono app (scripts/bench-http.sh, framework scenario), bundled with its
// framework into one ES module by esbuild and served as is by all three peers.
import { Hono } from "hono";
import { poweredBy } from "hono/powered-by";

const app = new Hono();

app.use(poweredBy());
// Timing: how long the rest of the chain took, as a response header.
app.use(async (c, next) => {
  const start = Date.now();
  await next();
  c.header("x-response-time", `${Date.now() - start}ms`);
});
// A header check on the API routes: a request marked blocked is refused.
app.use("/api/*", async (c, next) => {
  if (c.req.header("x-block") !== undefined) return c.text("blocked", 403);
  await next();
});

app.get("/", (c) => c.text("hello from hono"));
app.get("/users/:id", (c) => {
  const id = Number(c.req.param("id"));
  return c.json({ id, name: `user ${id}` });
});
app.get("/api/items", (c) => {
  const limit = Math.min(Number(c.req.query("limit") ?? 10), 100);
  return c.json(Array.from({ length: limit }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` })));
});

export default app;
