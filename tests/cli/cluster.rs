//! `isola serve --nats … --role gateway|worker`: a gateway and worker
//! processes over a real nats-server (Debian's; `.ci/run` installs it),
//! sharing one data directory.

use crate::server::Server;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server on a free loopback port, stopped when dropped.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server (apt-get install nats-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `isola serve --role worker` process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(nats: &Nats, data: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
            .args(["serve", "--role", "worker", "--workers", "1", "--nats"])
            .arg(&nats.url)
            .arg("--data")
            .arg(data)
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
        Self(child)
    }

    /// SIGTERM; whether it exited within `limit`.
    fn terminate_within(&mut self, limit: Duration) -> bool {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.0.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// Asks until the gateway answers 200 (10 s at most): a new worker's
/// subscription reaches the NATS server shortly after it says so.
fn until_served(gateway: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(gateway).0 != 200 {
        assert!(Instant::now() < deadline, "no worker took the invocation");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_gateway_runs_functions_on_the_workers_of_its_cluster() {
    let nats = Nats::start();
    let data = tempfile::tempdir().unwrap();
    let gateway = Server::start(data.path(), &["--nats", &nats.url, "--role", "gateway"]);
    // Deploys are checked on the gateway itself: a broken module is refused.
    gateway.create_function("broken");
    let refused = gateway.deploy_module("broken", "export default {");
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    gateway.deploy_function(
        "hello",
        "export default { fetch: (r) => new Response('hello from ' + new URL(r.url).pathname) }",
    );
    // No worker yet: the public gets a bare 503.
    assert_eq!(get(&gateway), (503, "Service Unavailable".to_string()));

    let mut first = Worker::start(&nats, data.path());
    until_served(&gateway);
    for _ in 0..20 {
        assert_eq!(get(&gateway), (200, "hello from /".to_string()));
    }
    // A second worker joins; the first dies without warning: the cluster
    // keeps serving.
    let mut second = Worker::start(&nats, data.path());
    let _ = first.0.kill();
    let _ = first.0.wait();
    for _ in 0..20 {
        assert_eq!(get(&gateway), (200, "hello from /".to_string()));
    }
    // The gateway keeps the records of what it served.
    let records = gateway.list_of("/v1/functions/hello/invocations?limit=1000", 41);
    let served = records.iter().filter(|r| r["status"] == "ok").count();
    assert!(served >= 40, "{records:?}");
    // A worker stops cleanly on SIGTERM.
    assert!(second.terminate_within(Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&gateway).0 != 503 {
        assert!(Instant::now() < deadline, "a stopped worker still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A node of role `all` (the default) is a worker too: the gateway's
    // traffic runs there now.
    let both = Server::start(data.path(), &["--nats", &nats.url]);
    until_served(&gateway);
    assert_eq!(get(&both), (200, "hello from /".to_string()));
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
