//! `isola serve` end to end: the deploy/invoke/rollback/logs journey, auth,
//! bad uploads, limits, crash safety and concurrent deploys.

use crate::server::{Server, TOKEN};
use crate::{stderr, stdout};
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn write(dir: &std::path::Path, name: &str, code: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, code).unwrap();
    path.to_string_lossy().into_owned()
}

fn error_code(response: reqwest::blocking::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn deploy_invoke_rollback_and_logs_journey() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--base-domain", "fn.test"]);
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "stdout: {}\nstderr: {}",
            stdout(out),
            stderr(out)
        )
    };

    let out = server.cli(&["functions", "create", "--name", "hello-world"], "");
    ok(&out);
    let v1 = write(dir.path(), "basic.js", "export default async (p) => { console.log('v1 got', p.name); return { message: `hello ${p.name}`, version: 1 } }");
    let out = server.cli(
        &["functions", "deploy", &v1, "--function", "hello-world"],
        "",
    );
    ok(&out);
    assert!(stdout(&out).contains("version 1"), "{}", stdout(&out));

    let out = server.cli(
        &[
            "functions",
            "invoke",
            "hello-world",
            "--payload",
            r#"{"name":"world"}"#,
        ],
        "",
    );
    ok(&out);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
        json!({ "message": "hello world", "version": 1 })
    );
    // The payload can come from stdin too.
    let out = server.cli(
        &["functions", "invoke", "hello-world"],
        r#"{"name":"stdin"}"#,
    );
    ok(&out);
    assert!(stdout(&out).contains("hello stdin"));

    // Version 2 is a Workers-style function reached by path and by Host.
    let v2 = write(dir.path(), "worker.js", "export default { async fetch(req, env) { const u = new URL(req.url); return new Response(`v2 ${req.method} ${u.pathname}${u.search} ${env.GREETING} ${await req.text()}`, { headers: { 'x-version': '2' } }) } }");
    let out = server.cli(
        &[
            "functions",
            "deploy",
            &v2,
            "-f",
            "hello-world",
            "--env",
            "GREETING=hi",
            "--secret",
            "API_KEY=hunter2",
        ],
        "",
    );
    ok(&out);
    let http = server.http();
    let response = http
        .post(format!("{}/fn/hello-world/items/7?q=1", server.url))
        .body("body!")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-version"], "2");
    assert!(response.headers().contains_key("x-isola-invocation-id"));
    assert_eq!(response.text().unwrap(), "v2 POST /items/7?q=1 hi body!");
    let by_host = http
        .get(format!("{}/x", server.url))
        .header("host", "hello-world.fn.test")
        .send()
        .unwrap();
    assert_eq!(by_host.text().unwrap(), "v2 GET /x hi ");

    // Secrets are write-only.
    let deployments: Value = server
        .api(Method::GET, "/v1/functions/hello-world/deployments")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(deployments[0]["secret_names"], json!(["API_KEY"]));
    assert!(!deployments.to_string().contains("hunter2"));

    // Roll back to version 1.
    let out = server.cli(&["functions", "rollback", "hello-world"], "");
    ok(&out);
    let out = server.cli(
        &[
            "functions",
            "invoke",
            "hello-world",
            "-p",
            r#"{"name":"again"}"#,
        ],
        "",
    );
    assert!(stdout(&out).contains("\"version\":1"), "{}", stdout(&out));
    let out = server.cli(&["functions", "deployments", "hello-world", "--json"], "");
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["active"] == true)
            .map(|d| d["version"].clone())
            .collect::<Vec<_>>(),
        [json!(1)]
    );

    // Logs and invocation records (written in the background).
    std::thread::sleep(Duration::from_millis(300));
    let out = server.cli(&["functions", "logs", "hello-world"], "");
    ok(&out);
    assert!(
        stdout(&out).contains("v1 got world") && stdout(&out).contains("v1 got again"),
        "{}",
        stdout(&out)
    );
    let records: Value = server
        .api(Method::GET, "/v1/functions/hello-world/invocations")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(records.as_array().unwrap().len() >= 5, "{records}");

    // Function errors from the CLI: JSON on stderr, exit code 1.
    let failing = write(
        dir.path(),
        "fail.js",
        "export default () => { throw new Error('boom') }",
    );
    ok(&server.cli(&["functions", "deploy", &failing, "-f", "hello-world"], ""));
    let out = server.cli(&["functions", "invoke", "hello-world"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("uncaught_exception") && stderr(&out).contains("boom"),
        "{}",
        stderr(&out)
    );

    // The list, the OpenAPI document, metrics.
    let out = server.cli(&["functions", "list"], "");
    assert!(stdout(&out).contains("hello-world"));
    let openapi: Value = http
        .get(format!("{}/v1/openapi.json", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(openapi["paths"]["/v1/functions/{name}/deployments"]["post"].is_object());
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "isola_invocations_total{function=\"hello-world\",outcome=\"uncaught_exception\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("isola_warm_isolates"));
    let rss_line = metrics
        .lines()
        .find(|l| l.starts_with("isola_resident_memory_bytes "))
        .expect("an RSS gauge");
    assert!(
        rss_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1 << 20,
        "{rss_line}"
    );
}

#[test]
fn logs_follow_streams_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function(
        "chatty",
        "export default (p) => { console.log('said', p.n); return p.n }",
    );
    let stream = Client::builder()
        .build()
        .unwrap()
        .get(format!(
            "{}/v1/functions/chatty/logs?follow=true",
            server.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    server
        .api(Method::POST, "/v1/functions/chatty/invoke")
        .json(&json!({ "n": 42 }))
        .send()
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let data = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.starts_with("data:"))
        .expect("an event");
    let event: Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(event["message"], "said 42");
}

#[test]
fn the_api_refuses_requests_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = server.http();
    let none = http
        .get(format!("{}/v1/functions", server.url))
        .send()
        .unwrap();
    assert_eq!(
        error_code(none),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let wrong = http
        .get(format!("{}/v1/functions", server.url))
        .bearer_auth("nope")
        .send()
        .unwrap();
    assert_eq!(
        error_code(wrong),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isola"))
        .args([
            "functions",
            "list",
            "--server",
            &server.url,
            "--token",
            "nope",
        ])
        .env("ISOLA_CONFIG", dir.path().join("none.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid token"));
}

#[test]
fn a_token_is_generated_on_first_start_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_isola"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env_remove("ISOLA_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut token = None;
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Admin token (shown once, stored hashed): ") {
            token = Some(rest.to_string());
        }
        if let Some(rest) = line.strip_prefix("isola listening on ") {
            url = Some(rest.split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    let (token, url) = (token.expect("a generated token"), url.unwrap());
    let status = Client::new()
        .get(format!("{url}/v1/functions"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    let _ = child.kill();
    let _ = child.wait();
    let db = std::fs::read(dir.path().join("isola.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(&token),
        "the token is stored in clear"
    );
}

#[test]
fn bad_uploads_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("strict");
    let upload = |body: Vec<u8>| server.deploy_module("strict", body);
    let response = upload(b"export default () => {\n  let x = ;\n}".to_vec());
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "syntax_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("main.js:2:"),
        "{body}"
    );
    assert_eq!(
        error_code(upload(
            b"import './missing.js'; export default () => 1".to_vec()
        )),
        (StatusCode::BAD_REQUEST, "link_error".into())
    );
    assert_eq!(
        error_code(upload(b"export const notDefault = 1".to_vec())),
        (StatusCode::BAD_REQUEST, "invalid_function".into())
    );
    assert_eq!(
        error_code(upload(Vec::new())),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    assert_eq!(
        error_code(upload(vec![0xff, 0xfe, 0x00, 0x41])),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    assert_eq!(
        error_code(upload(vec![b'/'; 21 << 20])),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    let bad_json = server
        .api(Method::POST, "/v1/functions/strict/deployments")
        .header("content-type", "application/json")
        .body("{\"files\": 7}")
        .send()
        .unwrap();
    assert_eq!(
        error_code(bad_json),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    let deployments: Value = server
        .api(Method::GET, "/v1/functions/strict/deployments")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(deployments, json!([]), "a bad upload was stored");
    let unknown = server
        .api(Method::GET, "/v1/functions/nope")
        .send()
        .unwrap();
    assert_eq!(
        error_code(unknown),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let good = upload(b"export default () => 1".to_vec());
    assert_eq!(good.status(), StatusCode::CREATED);
}

#[test]
fn request_and_response_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--max-request-mb", "1", "--max-response-mb", "1"],
    );
    server.create_function("sizes");
    let code = "export default { async fetch(req) { const n = Number(new URL(req.url).searchParams.get('n') ?? 0); await req.arrayBuffer(); return new Response('x'.repeat(n)) } }";
    server.deploy_module("sizes", code);
    let http = server.http();
    let big = http
        .post(format!("{}/fn/sizes/", server.url))
        .body(vec![b'a'; 2 << 20])
        .send()
        .unwrap();
    assert_eq!(
        error_code(big),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    let fine = http
        .post(format!("{}/fn/sizes/?n=10", server.url))
        .body(vec![b'a'; 1000])
        .send()
        .unwrap();
    assert_eq!(fine.text().unwrap(), "x".repeat(10));
    let huge = http
        .get(format!("{}/fn/sizes/?n={}", server.url, 2 << 20))
        .send()
        .unwrap();
    assert_eq!(
        error_code(huge),
        (StatusCode::BAD_GATEWAY, "response_too_large".into())
    );
    let missing = http
        .get(format!("{}/fn/ghost/", server.url))
        .send()
        .unwrap();
    assert_eq!(error_code(missing).0, StatusCode::NOT_FOUND);
}

#[test]
fn sigkill_during_deploys_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("durable");
    let url = server.url.clone();
    let (acknowledged_tx, acknowledged_rx) = std::sync::mpsc::channel();
    let deployer = std::thread::spawn(move || {
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        for i in 1..=200 {
            let sent = http
                .post(format!("{url}/v1/functions/durable/deployments"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/javascript")
                .body(format!("export default () => {i}"))
                .send();
            match sent {
                Ok(response) if response.status() == StatusCode::CREATED => {
                    let body: Value = response.json().unwrap();
                    acknowledged_tx
                        .send((i, body["version"].as_u64().unwrap()))
                        .unwrap();
                }
                _ => break,
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    server.kill();
    deployer.join().unwrap();
    let acknowledged: Vec<(u64, u64)> = acknowledged_rx.try_iter().collect();
    assert!(
        !acknowledged.is_empty(),
        "no deploy was acknowledged before the kill"
    );

    let restarted = Server::start(dir.path(), &[]);
    let deployments: Value = restarted
        .api(Method::GET, "/v1/functions/durable/deployments")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let stored: Vec<u64> = deployments
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_u64().unwrap())
        .collect();
    for (_, version) in &acknowledged {
        assert!(
            stored.contains(version),
            "acknowledged version {version} lost; stored {stored:?}"
        );
    }
    let (last_value, last_version) = *acknowledged.last().unwrap();
    let active = deployments
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["active"] == true)
        .unwrap()["version"]
        .as_u64()
        .unwrap();
    assert!(
        active >= last_version,
        "active {active} is older than the last acknowledged {last_version}"
    );
    let result: Value = restarted
        .api(Method::POST, "/v1/functions/durable/invoke")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        result.as_u64().unwrap() >= last_value,
        "restarted node serves {result}, expected at least {last_value}"
    );
}

#[test]
fn concurrent_deploys_of_one_function_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("race");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let response = Client::new()
                    .post(format!("{url}/v1/functions/race/deployments"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/javascript")
                    .body(format!("export default () => {i}"))
                    .send()
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
                (
                    i,
                    response.json::<Value>().unwrap()["version"]
                        .as_u64()
                        .unwrap(),
                )
            })
        })
        .collect();
    let deployed: Vec<(u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut versions: Vec<u64> = deployed.iter().map(|(_, version)| *version).collect();
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let function: Value = server
        .api(Method::GET, "/v1/functions/race")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let active = function["active_version"].as_u64().unwrap();
    // Whatever won, the node serves exactly the active version's code.
    let expected = deployed
        .iter()
        .find(|(_, version)| *version == active)
        .unwrap()
        .0;
    let served: Value = server
        .api(Method::POST, "/v1/functions/race/invoke")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(served, json!(expected));
}

#[test]
fn kv_from_functions_and_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "stdout: {}\nstderr: {}",
            stdout(out),
            stderr(out)
        )
    };
    for name in ["counter", "other"] {
        ok(&server.cli(&["functions", "create", "--name", name], ""));
    }
    let counter = write(
        dir.path(),
        "counter.js",
        "export default async (p, { env }) => { const { value, version } = await env.KV.getWithVersion('hits'); const n = Number(value ?? 0) + 1; const r = await env.KV.atomic().check('hits', version).set('hits', String(n)).commit(); return { ok: r.ok, n } }",
    );
    ok(&server.cli(
        &["functions", "deploy", &counter, "-f", "counter", "--kv"],
        "",
    ));
    let snoop = write(
        dir.path(),
        "snoop.js",
        "export default async (p, { env }) => env.KV.get('hits')",
    );
    ok(&server.cli(&["functions", "deploy", &snoop, "-f", "other", "--kv"], ""));
    for expected in 1..=3 {
        let out = server.cli(&["functions", "invoke", "counter"], "");
        assert_eq!(
            serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
            json!({ "ok": true, "n": expected })
        );
    }
    let out = server.cli(&["kv", "get", "counter", "hits"], "");
    ok(&out);
    assert_eq!(stdout(&out), "3");
    let out = server.cli(&["functions", "invoke", "other"], "");
    assert_eq!(
        stdout(&out).trim(),
        "null",
        "one function read another's KV"
    );

    ok(&server.cli(&["kv", "put", "counter", "hits", "41"], ""));
    let out = server.cli(&["functions", "invoke", "counter"], "");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
        json!({ "ok": true, "n": 42 })
    );
    ok(&server.cli(&["kv", "put", "counter", "note", "-"], "from stdin"));
    let out = server.cli(&["kv", "list", "counter"], "");
    assert!(
        stdout(&out).contains("hits") && stdout(&out).contains("note"),
        "{}",
        stdout(&out)
    );
    ok(&server.cli(&["kv", "delete", "counter", "note"], ""));
    let out = server.cli(&["kv", "get", "counter", "note"], "");
    assert_eq!(out.status.code(), Some(3));
    let out = server.cli(&["kv", "get", "ghost", "x"], "");
    assert_eq!(out.status.code(), Some(3));
    // Deleting what is not there says so; listing as JSON gives objects.
    let out = server.cli(&["kv", "delete", "counter", "note"], "");
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("no KV key"), "{}", stderr(&out));
    let out = server.cli(&["kv", "list", "counter", "--json"], "");
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed["keys"][0]["key"], "hits", "{listed}");
    assert!(listed["keys"][0]["version"].is_number(), "{listed}");
}

#[test]
fn a_typescript_project_deploys_from_its_isola_toml() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("isola.toml"),
        "name = \"typed\"\nmain = \"src/index.ts\"\nkv_binding = \"STORE\"\n\n[limits]\ncpu_ms = 200\n\n[vars]\nGREETING = \"hello\"\n",
    )
    .unwrap();
    std::fs::write(
        project.join("src/greet.ts"),
        "export const greet = (g: string, n: string): string => `${g} ${n}`;\n",
    )
    .unwrap();
    std::fs::write(
        project.join("src/index.ts"),
        "import { greet } from './greet.ts';\ninterface Env { GREETING: string; STORE: { put(k: string, v: string): Promise<void>; get(k: string): Promise<string | null> } }\nexport default async (p: { name: string }, ctx: { env: Env }) => {\n  await ctx.env.STORE.put('last', p.name);\n  return { text: greet(ctx.env.GREETING, p.name), last: await ctx.env.STORE.get('last') };\n};\n",
    )
    .unwrap();
    let out = server.cli(&["functions", "create", "--name", "typed"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["functions", "deploy", project.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(
        &["functions", "invoke", "typed", "-p", r#"{"name":"ts"}"#],
        "",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
        json!({ "text": "hello ts", "last": "ts" })
    );
    let deployments: Value = server
        .api(Method::GET, "/v1/functions/typed/deployments")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(deployments[0]["limits"]["cpu_ms"], 200);
    assert_eq!(deployments[0]["entry"], "src/index.ts");
    assert_eq!(deployments[0]["kv_binding"], "STORE");
}

#[test]
fn streamed_response_bodies_arrive_as_they_are_produced() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-response-mb", "1"]);
    server.create_function("ticker");
    let code = "export default { fetch(req) {
        const big = new URL(req.url).searchParams.has('big');
        let n = 0;
        const body = new ReadableStream({
            async pull(c) {
                if (big) { c.enqueue(new Uint8Array(256 * 1024)); if (++n === 40) c.close(); return; }
                if (n > 0) await new Promise(r => setTimeout(r, 300));
                c.enqueue(new TextEncoder().encode(`tick ${n}\\n`));
                if (++n === 3) c.close();
            },
        });
        return new Response(body, { headers: { 'content-type': 'text/plain' } });
    } }";
    let response = server.deploy_module("ticker", code);
    assert_eq!(response.status(), StatusCode::CREATED);
    let started = std::time::Instant::now();
    let mut response = server
        .http()
        .get(format!("{}/fn/ticker/", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut first = [0u8; 7];
    std::io::Read::read_exact(&mut response, &mut first).unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first, b"tick 0\n");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut response, &mut rest).unwrap();
    assert_eq!(rest, "tick 1\ntick 2\n");
    assert!(
        first_at < Duration::from_millis(450),
        "the first chunk waited for the rest: {first_at:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));

    // Past the response limit the stream is cut off, never completed.
    let big = server
        .http()
        .get(format!("{}/fn/ticker/?big", server.url))
        .send()
        .unwrap();
    let read = big.bytes();
    assert!(
        read.map_or(true, |b| b.len() <= 1 << 20),
        "a streamed body passed the limit"
    );
}

#[test]
fn request_bodies_stream_into_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-request-mb", "2"]);
    server.create_function("sink");
    let code = "export default { async fetch(req) {
        let bytes = 0, chunks = 0;
        try {
            for await (const chunk of req.body) { bytes += chunk.byteLength; chunks++; }
            return Response.json({ bytes, chunks });
        } catch (e) { return Response.json({ error: e.message, bytes }, { status: 413 }); }
    } }";
    let deployed = server.deploy_module("sink", code);
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let http = server.http();
    // A large body with a declared length streams in several chunks.
    let body: Value = http
        .post(format!("{}/fn/sink/", server.url))
        .body(vec![7u8; 1 << 20])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["bytes"], 1 << 20);
    assert!(body["chunks"].as_u64().unwrap() >= 1, "{body}");
    // A body of unknown length (chunked) streams too, and is cut at the limit.
    let chunked = |size: usize| reqwest::blocking::Body::new(std::io::Cursor::new(vec![1u8; size]));
    let body: Value = http
        .post(format!("{}/fn/sink/", server.url))
        .body(chunked(300_000))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["bytes"], 300_000);
    // The function answers 413 as soon as the limit is passed; the client,
    // still sending, may see that answer or a closed connection.
    match http
        .post(format!("{}/fn/sink/", server.url))
        .body(chunked(3 << 20))
        .send()
    {
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let body: Value = response.json().unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("larger than the limit"),
                "{body}"
            );
            assert!(body["bytes"].as_u64().unwrap() <= 2 << 20, "{body}");
        }
        Err(error) => assert!(error.is_body() || error.is_request(), "{error}"),
    }
    let body: Value = http
        .post(format!("{}/fn/sink/", server.url))
        .body(vec![1u8; 10])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["bytes"], 10);
}
