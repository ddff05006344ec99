// A compute function for scripts/bench-cluster.sh: about a millisecond of
// JSON work (build, serialise, parse, sum), then a small JSON answer.
export default {
  fetch() {
    const rows = [];
    for (let i = 0; i < 600; i++) rows.push({ id: i, name: "row " + i, tags: ["a", "b", String(i % 7)] });
    const back = JSON.parse(JSON.stringify(rows));
    let sum = 0;
    for (const row of back) sum += row.id * row.tags.length;
    return Response.json({ sum });
  },
};
