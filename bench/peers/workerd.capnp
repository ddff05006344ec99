# workerd serving hello-worker.js on 127.0.0.1:8791 (scripts/bench-peers.sh).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .helloWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:8791", http = (), service = "main") ],
);

const helloWorker :Workerd.Worker = (
  modules = [ (name = "hello-worker.js", esModule = embed "hello-worker.js") ],
  compatibilityDate = "2024-09-01",
);
