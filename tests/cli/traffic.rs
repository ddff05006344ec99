//! Function traffic as the worker threads serve it: the request a function
//! sees, and every request served leaving a record (or a counted drop).

use crate::server::Server;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

const ECHO: &str = r#"export default { async fetch(request) {
  let immutable = false;
  try { request.headers.set("x-added", "1"); } catch (e) { immutable = e instanceof TypeError; }
  return Response.json({
    method: request.method,
    url: request.url,
    parsed: new URL(request.url).pathname,
    test: request.headers.get("x-test"),
    immutable,
    body: await request.text(),
  });
} }"#;

/// A node serving one function.
fn serving(name: &str, code: &'static str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function(name, code);
    (dir, server)
}

#[test]
fn a_function_sees_the_request_as_it_came() {
    let (_dir, server) = serving("echo", ECHO);
    let host = server.url.trim_start_matches("http://");
    let seen: Value = server
        .http()
        .post(format!("{}/fn/echo/a%20b/c?x=1&y=%2F", server.url))
        .header("x-test", "yes")
        .body("payload")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["url"], format!("http://{host}/a%20b/c?x=1&y=%2F"));
    assert_eq!(seen["parsed"], "/a%20b/c");
    assert_eq!(seen["test"], "yes");
    assert_eq!(seen["immutable"], true, "{seen}");
    assert_eq!(seen["body"], "payload");

    // A Host that cannot stand in a URL is not put in one.
    let odd: Value = server
        .http()
        .get(format!("{}/fn/echo/", server.url))
        .header("host", "evil/path@x")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(odd["url"], "http://localhost/");
}

/// `isola_records_dropped_total` from /metrics.
fn dropped(server: &Server) -> u64 {
    let text = server
        .api(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("isola_records_dropped_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the drop counter")
}

#[test]
fn every_request_served_leaves_a_record_or_a_counted_drop() {
    const THREADS: usize = 4;
    const EACH: usize = 100;
    let hello = "export default { fetch() { return new Response('hi') } }";
    let (_dir, server) = serving("counted", hello);
    let url = format!("{}/fn/counted/", server.url);
    let served: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let http = server.http();
                    (0..EACH)
                        .filter(|_| {
                            http.get(&url)
                                .send()
                                .is_ok_and(|r| r.status() == StatusCode::OK)
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(served, THREADS * EACH);
    let metrics = server
        .api(Method::GET, "/metrics")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let counted =
        format!("isola_invocations_total{{function=\"counted\",outcome=\"ok\"}} {served}");
    assert!(metrics.contains(&counted), "{metrics}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records: Vec<Value> = server
            .api(Method::GET, "/v1/functions/counted/invocations?limit=1000")
            .send()
            .unwrap()
            .json()
            .unwrap();
        let accounted = records.len() as u64 + dropped(&server);
        if accounted == served as u64 {
            break;
        }
        assert!(
            accounted < served as u64,
            "{accounted} records for {served} requests"
        );
        assert!(
            Instant::now() < deadline,
            "{accounted} of {served} requests accounted for"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stalled_request_body_is_given_up_and_a_used_body_is_an_error() {
    use std::io::{Read, Write};
    let (_dir, server) = serving("echo", ECHO);
    let host = server.url.trim_start_matches("http://");
    let mut stalled = std::net::TcpStream::connect(host).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    write!(
        stalled,
        "POST /fn/echo/ HTTP/1.1\r\nhost: {host}\r\ncontent-length: 10\r\n\r\na"
    )
    .unwrap();
    let mut answer = [0u8; 64];
    let read = stalled.read(&mut answer).unwrap();
    let head = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(15));

    let used = "export default { async fetch() { const r = new Response('x'); await r.text(); return r; } }";
    server.deploy_function("used", used);
    let response = server
        .http()
        .get(format!("{}/fn/used/", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn records_queued_at_shutdown_are_written() {
    const REQUESTS: usize = 200;
    let hello = "export default { fetch() { return new Response('hi') } }";
    let (dir, mut server) = serving("stopped", hello);
    let http = server.http();
    for _ in 0..REQUESTS {
        let response = http
            .get(format!("{}/fn/stopped/", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Stopped at once, while the last records wait to be written.
    assert!(server.terminate_within(Duration::from_secs(15)));
    let server = Server::start(dir.path(), &[]);
    let records = server.list_of("/v1/functions/stopped/invocations?limit=1000", REQUESTS);
    assert_eq!(records.len(), REQUESTS);
}

#[test]
fn a_json_function_takes_a_post_over_http() {
    let (_dir, server) = serving("doubler", "export default (p) => ({ doubled: p.n * 2 })");
    let url = format!("{}/fn/doubler/", server.url);
    let answered = server.http().post(&url).body(r#"{"n":4}"#).send().unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(answered.headers()["content-type"], "application/json");
    assert_eq!(
        answered.json::<Value>().unwrap(),
        serde_json::json!({ "doubled": 8 })
    );
    let wrong = server.http().get(&url).send().unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "POST");
}

#[test]
fn the_access_log_has_a_json_line_per_request_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--access-log", "--log-format", "json"]);
    server.deploy_function(
        "logged",
        "export default { fetch() { return new Response('x') } }",
    );
    let response = server
        .http()
        .get(format!("{}/fn/logged/a/b", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let line = server
            .log
            .lock()
            .unwrap()
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("an access log line");
        if line.contains("isola::access") {
            break line;
        }
    };
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["fields"]["function"], "logged");
    assert_eq!(entry["fields"]["path"], "/a/b");
    assert_eq!(entry["fields"]["status"], 200);
}

#[test]
fn a_single_node_refuses_to_queue_an_invocation() {
    let (_dir, server) = serving("plain", "export default () => 1");
    let response = server
        .api(
            reqwest::Method::POST,
            "/v1/functions/plain/invoke?async=true",
        )
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let error: serde_json::Value = response.json().unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("need a cluster"), "{error}");
}
