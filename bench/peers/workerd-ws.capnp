# workerd serving ws-echo-worker.js on 127.0.0.1:8791 (scripts/bench-peers.sh).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .wsEcho) ],
  sockets = [ (name = "http", address = "127.0.0.1:8791", http = (), service = "main") ],
);

const wsEcho :Workerd.Worker = (
  modules = [ (name = "ws-echo-worker.js", esModule = embed "ws-echo-worker.js") ],
  compatibilityDate = "2024-09-01",
);
