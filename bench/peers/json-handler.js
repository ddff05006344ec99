// A JSON handler (isola's POST /v1/functions/<name>/invoke), the json
// scenario of scripts/bench-http.sh; json-worker.js is the same for the peers.
export default (p) => ({ hello: p.name, n: p.n + 1 });
