# workerd serving json-worker.js on 127.0.0.1:8791 (scripts/bench-http.sh).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .jsonWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:8791", http = (), service = "main") ],
);

const jsonWorker :Workerd.Worker = (
  modules = [ (name = "json-worker.js", esModule = embed "json-worker.js") ],
  compatibilityDate = "2024-09-01",
);
