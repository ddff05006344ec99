# workerd serving fetch-proxy.js on 127.0.0.1:8791, allowed to reach the
# loopback upstream (workerd's default outbound refuses private addresses).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .proxyWorker),
    (name = "loopback", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:8791", http = (), service = "main") ],
);

const proxyWorker :Workerd.Worker = (
  modules = [ (name = "fetch-proxy.js", esModule = embed "fetch-proxy.js") ],
  compatibilityDate = "2024-09-01",
  globalOutbound = "loopback",
);
