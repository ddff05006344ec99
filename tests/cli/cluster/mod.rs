//! `isola serve --nats … --role gateway|worker`: a gateway and worker
//! processes over a real nats-server with JetStream (Debian's; `.ci/run`
//! installs it), each with a data directory of its own and one node key.

mod placement;

use crate::server::Server;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server on a free loopback port, stopped when dropped.
struct Nats {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl Nats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let child = Self::spawn(port, store.path());
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        }
    }

    fn spawn(port: u16, store: &std::path::Path) -> Child {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server (apt-get install nats-server)");
        eventually(Duration::from_secs(10), "nats-server did not start", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        child
    }

    /// Kills the server and starts it again on the same port and storage.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Self::spawn(port, self._store.path());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `isola serve --role worker` process with a data directory of its
/// own, killed when dropped.
struct Worker {
    child: Child,
    _data: tempfile::TempDir,
}

impl Worker {
    fn start(nats: &Nats, key: &std::path::Path) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
            .args(["serve", "--role", "worker", "--workers", "1", "--nats"])
            .arg(&nats.url)
            .arg("--node-key-file")
            .arg(key)
            .arg("--data")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting an isola worker");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the worker exited early").unwrap();
            if line.contains("running invocations from") {
                break;
            }
        }
        crate::relay_lines(lines);
        Self { child, _data: data }
    }

    /// SIGTERM; whether it exited within `limit`.
    fn terminate_within(&mut self, limit: Duration) -> bool {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /fn/hello/` on the gateway: status and body.
fn get(gateway: &Server) -> (u16, String) {
    let response = gateway
        .http()
        .get(format!("{}/fn/hello/", gateway.url))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// Asks `done` every 50 ms until it holds; fails saying `what` after
/// `within`.
fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks until the gateway answers 200 (10 s at most): a new worker's
/// subscription reaches the NATS server shortly after it says so.
fn until_served(gateway: &Server) {
    eventually(
        Duration::from_secs(10),
        "no worker took the invocation",
        || get(gateway).0 == 200,
    );
}

/// `--nats URL --node-key-file KEY`, and more.
fn joining<'a>(nats: &'a Nats, key: &'a std::path::Path, more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--nats",
        &nats.url,
        "--node-key-file",
        key.to_str().unwrap(),
    ];
    flags.extend_from_slice(more);
    flags
}

#[test]
fn a_gateway_runs_functions_on_the_workers_of_its_cluster() {
    let nats = Nats::start();
    let (data, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = keys.path().join("node.key");
    let gateway = Server::start(data.path(), &joining(&nats, &key, &["--role", "gateway"]));
    // Deploys are checked on the gateway itself: a broken module is refused.
    gateway.create_function("broken");
    let refused = gateway.deploy_module("broken", "export default {");
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    gateway.deploy_function(
        "hello",
        "export default { fetch: (r, env) => new Response('hello from ' + new URL(r.url).pathname + ' ' + env.WHO) }",
    );
    let secret = gateway.cli(&["secret", "put", "hello", "WHO"], "a worker");
    assert!(secret.status.success(), "{}", crate::stderr(&secret));
    let hello = (200, "hello from / a worker".to_string());
    // No worker yet: the public gets a bare 503.
    assert_eq!(get(&gateway), (503, "Service Unavailable".to_string()));

    // The workers have data directories of their own: the function, its
    // code and its secret come from the cluster.
    let mut first = Worker::start(&nats, &key);
    until_served(&gateway);
    for _ in 0..20 {
        assert_eq!(get(&gateway), hello);
    }
    // `isola status` on the gateway lists the nodes alive.
    let mut status = String::new();
    eventually(Duration::from_secs(5), "status lists 2 nodes", || {
        status = crate::stdout(&gateway.cli(&["status"], ""));
        status.contains("cluster     2 nodes alive")
    });
    assert!(
        status.contains(" gateway ") && status.contains(" worker "),
        "{status}"
    );
    // A second worker joins; the first dies without warning: the cluster
    // keeps serving.
    let mut second = Worker::start(&nats, &key);
    let _ = first.child.kill();
    let _ = first.child.wait();
    for _ in 0..20 {
        assert_eq!(get(&gateway), hello);
    }
    // The gateway keeps the records of what it served.
    let records = gateway.list_of("/v1/functions/hello/invocations?limit=1000", 41);
    let served = records.iter().filter(|r| r["status"] == "ok").count();
    assert!(served >= 40, "{records:?}");
    // A worker stops cleanly on SIGTERM.
    assert!(second.terminate_within(Duration::from_secs(10)));
    eventually(
        Duration::from_secs(10),
        "a stopped worker still answers",
        || get(&gateway).0 == 503,
    );
    // A node of role `all` (the default), another gateway too: it knows
    // the function already, and runs the traffic of both.
    let other = tempfile::tempdir().unwrap();
    let both = Server::start(other.path(), &joining(&nats, &key, &[]));
    until_served(&gateway);
    assert_eq!(get(&both), hello);
    // Each gateway keeps the records of the whole cluster: what the first
    // served from now on, the second lists too.
    for _ in 0..3 {
        assert_eq!(get(&gateway), hello);
    }
    eventually(
        Duration::from_secs(10),
        "the second gateway lists 4 ok records",
        || {
            let seen = both.list_of("/v1/functions/hello/invocations?limit=1000", 1);
            seen.iter().filter(|r| r["status"] == "ok").count() >= 4
        },
    );
    // A node with another key is refused: it could not open the secrets.
    let stranger = tempfile::tempdir().unwrap();
    let refused = crate::isola(
        &[
            "serve",
            "--role",
            "worker",
            "--nats",
            &nats.url,
            "--data",
            stranger.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(!refused.status.success());
    let said = crate::stderr(&refused);
    assert!(said.contains("not the cluster's"), "{said}");
}

/// A nats-server and a node key for a cluster, with a gateway and one
/// worker (returned beside it) and `code` deployed as `name`.
struct Cluster {
    nats: Nats,
    key: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Cluster {
    fn start(name: &str, code: &'static str) -> (Self, Server, Worker) {
        let nats = Nats::start();
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let key = dirs.1.path().join("node.key");
        let gateway = Server::start(dirs.0.path(), &joining(&nats, &key, &["--role", "gateway"]));
        gateway.deploy_function(name, code);
        let worker = Worker::start(&nats, &key);
        let cluster = Self {
            nats,
            key,
            _dirs: dirs,
        };
        (cluster, gateway, worker)
    }
}

#[test]
fn bodies_cross_between_nodes_streamed_both_ways() {
    let (_cluster, gateway, _worker) = Cluster::start(
        "echo",
        "export default { async fetch(r) { const b = await r.arrayBuffer(); if (b.byteLength > 600000 && b.byteLength < 800000) console.log('\\x01'.repeat(100000)); if (b.byteLength === 7) for (let i = 0; i < 3; i++) console.log('\\x01'.repeat(65000)); return new Response(new Uint8Array(b.byteLength)) } }",
    );
    let post = |body: reqwest::blocking::Body| {
        let response = gateway
            .http()
            .post(format!("{}/fn/echo/", gateway.url))
            .body(body)
            .send()
            .unwrap();
        (response.status().as_u16(), response.bytes().unwrap().len())
    };
    // Streamed to the gateway (over 64 KiB, or chunked), and longer than
    // a NATS message: pulled by the worker in frames, and back.
    // On a failure, the owner's view of it: the newest record's error.
    let why = || {
        let records = gateway.list_of("/v1/functions/echo/invocations?limit=1", 1);
        format!(
            "{} {}",
            records[0]["error_code"], records[0]["error_message"]
        )
    };
    let got = post(vec![1u8; 100 << 10].into());
    assert_eq!(got, (200, 100 << 10), "{}", why());
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(vec![1u8; 10]));
    assert_eq!(post(chunked), (200, 10), "{}", why());
    let got = post(vec![1u8; 5 << 20].into());
    assert_eq!(got, (200, 5 << 20), "{}", why());
    // Past the node's request limit (10 MiB): refused at the door.
    assert_eq!(post(vec![1u8; 11 << 20].into()).0, 413);
    // Long lines leave less room for the body in the answer: the rest
    // follows in frames (control characters take six bytes each there).
    assert_eq!(post(vec![1u8; 700 << 10].into()), (200, 700 << 10));
    // Lines too long for any answer still get one, an error, at once.
    let started = Instant::now();
    assert_eq!(
        post(vec![1u8; 7].into()),
        (500, "Internal Server Error".len())
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_streamed_response_reaches_the_client_as_it_is_written() {
    let (_cluster, gateway, _worker) = Cluster::start(
        "ticks",
        "export default { fetch() { let n = 0; return new Response(new ReadableStream({ async pull(c) { if (n > 0) await new Promise((r) => setTimeout(r, 400)); if (n++ === 3) c.close(); else c.enqueue(new TextEncoder().encode('tick ')); } })) } }",
    );
    let started = Instant::now();
    let mut response = gateway
        .http()
        .get(format!("{}/fn/ticks/", gateway.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut first = [0u8; 5];
    std::io::Read::read_exact(&mut response, &mut first).unwrap();
    assert_eq!(&first, b"tick ");
    // The first tick came before the others were written.
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut response, &mut rest).unwrap();
    assert_eq!(rest, "tick tick ");
}

#[test]
fn a_stopping_worker_finishes_what_it_took() {
    let (_cluster, gateway, mut worker) = Cluster::start(
        "slow",
        "export default { async fetch() { await new Promise((r) => setTimeout(r, 1000)); return new Response('done') } }",
    );
    let url = format!("{}/fn/slow/", gateway.url);
    let client = gateway.http();
    let asked = std::thread::spawn(move || {
        let response = client.get(url).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(400));
    assert!(worker.terminate_within(Duration::from_secs(10)));
    assert_eq!(asked.join().unwrap(), (200, "done".to_string()));
}

#[test]
fn a_worker_dying_under_an_invocation_is_noticed_within_seconds() {
    let (_cluster, gateway, mut worker) = Cluster::start(
        "slow",
        "export default { async fetch() { await new Promise((r) => setTimeout(r, 20000)); return new Response('done') } }",
    );
    // The gateway places invocations once it has heard the worker.
    std::thread::sleep(Duration::from_millis(1500));
    let url = format!("{}/fn/slow/", gateway.url);
    let client = gateway.http();
    let asked = std::thread::spawn(move || {
        let started = Instant::now();
        let status = client.get(url).send().unwrap().status().as_u16();
        (status, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let _ = worker.child.kill();
    let _ = worker.child.wait();
    let (status, took) = asked.join().unwrap();
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// `POST /v1/functions/<name>/invoke?async=true` through the gateway:
/// 202 and the invocation's id; its record, once it has run.
fn queue(gateway: &Server, payload: serde_json::Value) -> String {
    let response = gateway
        .api(
            reqwest::Method::POST,
            "/v1/functions/queued/invoke?async=true",
        )
        .json(&payload)
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let answer: serde_json::Value = response.json().unwrap();
    answer["id"].as_str().unwrap().to_string()
}

fn record_of(gateway: &Server, id: &str, within: Duration) -> serde_json::Value {
    let mut found = None;
    eventually(within, &format!("no record of {id}"), || {
        let records = gateway.list_of("/v1/functions/queued/invocations?limit=1000", 0);
        found = records.into_iter().find(|r| r["id"] == id);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn queued_invocations_run_once_taken_even_if_their_worker_dies() {
    let (cluster, gateway, mut worker) = Cluster::start(
        "queued",
        "export default async (p) => { await new Promise((r) => setTimeout(r, p.ms)); return { n: p.n } }",
    );
    let quick = queue(&gateway, serde_json::json!({ "n": 1, "ms": 0 }));
    assert_eq!(
        record_of(&gateway, &quick, Duration::from_secs(10))["status"],
        "ok"
    );
    // Taken by a worker that dies while it runs: delivered again, to the
    // next worker, once its acknowledgement is overdue (30 s).
    let slow = queue(&gateway, serde_json::json!({ "n": 2, "ms": 3000 }));
    std::thread::sleep(Duration::from_millis(1000));
    let _ = worker.child.kill();
    let _ = worker.child.wait();
    let _next = Worker::start(&cluster.nats, &cluster.key);
    assert_eq!(
        record_of(&gateway, &slow, Duration::from_secs(50))["status"],
        "ok"
    );
    // Its id says where it stands, with its result.
    let state = queued_state(&gateway, &slow);
    assert_eq!(state["state"], "ok", "{state}");
    assert_eq!(state["output"], serde_json::json!({ "n": 2 }));
    assert_eq!(state["deliveries"], 2, "{state}");
    let unknown = gateway
        .api(
            reqwest::Method::GET,
            "/v1/functions/queued/invocations/inv_never",
        )
        .send()
        .unwrap();
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
}

/// `GET /v1/functions/queued/invocations/<id>`.
fn queued_state(gateway: &Server, id: &str) -> serde_json::Value {
    let path = format!("/v1/functions/queued/invocations/{id}");
    let response = gateway.api(reqwest::Method::GET, &path).send().unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().unwrap()
}

#[test]
fn a_queued_invocation_whose_deployment_is_gone_is_given_up_with_a_record() {
    let (cluster, gateway, mut worker) =
        Cluster::start("queued", "export default (p) => ({ n: p.n })");
    // Queued while no worker runs, then the deployment is replaced: no
    // worker can run the version it names.
    assert!(worker.terminate_within(Duration::from_secs(10)));
    let orphan = queue(&gateway, serde_json::json!({ "n": 1 }));
    assert_eq!(queued_state(&gateway, &orphan)["state"], "queued");
    let replaced = gateway.deploy_module("queued", "export default (p) => ({ m: p.n })");
    assert_eq!(replaced.status(), reqwest::StatusCode::CREATED);
    let _next = Worker::start(&cluster.nats, &cluster.key);
    let record = record_of(&gateway, &orphan, Duration::from_secs(30));
    assert_eq!(record["status"], "error");
    let message = record["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("given up after 5 deliveries"), "{record}");
    let state = queued_state(&gateway, &orphan);
    assert_eq!(state["state"], "error", "{state}");
    assert_eq!(state["error"]["code"], "unavailable", "{state}");
}

#[test]
fn the_cluster_survives_a_restart_of_its_nats_server() {
    let (mut cluster, gateway, _worker) = Cluster::start(
        "hello",
        "export default { fetch: () => new Response('one') }",
    );
    until_served(&gateway);
    cluster.nats.restart();
    // The nodes reconnect on their own; JetStream kept the registry.
    let one = (200, "one".to_string());
    eventually(
        Duration::from_secs(20),
        "not served again after the restart",
        || get(&gateway) == one,
    );
    let redeployed = gateway.deploy_module(
        "hello",
        "export default { fetch: () => new Response('two') }",
    );
    assert_eq!(redeployed.status(), reqwest::StatusCode::CREATED);
    let two = (200, "two".to_string());
    eventually(
        Duration::from_secs(10),
        "a deploy after the restart is not served",
        || get(&gateway) == two,
    );
}

#[test]
fn a_cluster_role_needs_a_reachable_nats_server() {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_str().unwrap();
    let alone = crate::isola(&["serve", "--role", "worker", "--data", data], "");
    assert!(!alone.status.success());
    let said = crate::stderr(&alone);
    assert!(said.contains("--role worker needs --nats"), "{said}");
    let unreachable = crate::isola(
        &[
            "serve",
            "--role",
            "gateway",
            "--nats",
            "nats://127.0.0.1:1",
            "--data",
            data,
        ],
        "",
    );
    assert!(!unreachable.status.success());
    let said = crate::stderr(&unreachable);
    assert!(
        said.contains("could not reach NATS at nats://127.0.0.1:1"),
        "{said}"
    );
}
