// A JSON handler: `isola invoke examples/basic.js --payload '{"name":"world"}'`
export default async (payload, ctx) => {
  console.log(`invocation ${ctx.invocationId}`);
  return { message: `hello ${payload?.name ?? "stranger"}` };
};
