export default async (p) => ({ hello: p.name });
