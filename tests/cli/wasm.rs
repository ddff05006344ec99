//! WebAssembly functions: files are bytes (base64 in JSON), a deployment
//! says which runtime runs it, and one dispatching invoker sends each
//! function to its runtime; WASI preview 1 commands through `isola serve`
//! and `isola invoke`.

use crate::server::Server;

/// Writes `bytes` to `<function>.wasm` in `dir` and deploys it as
/// `function` with the CLI (and `extra` flags); its deployment must say
/// `runtime`. The file's path.
fn deploy_file(
    server: &Server,
    dir: &std::path::Path,
    bytes: Vec<u8>,
    (function, runtime): (&str, &str),
    extra: &[&str],
) -> std::path::PathBuf {
    let file = dir.join(format!("{function}.wasm"));
    std::fs::write(&file, bytes).unwrap();
    let path = file.to_str().unwrap();
    let deployed = server.cli(
        &[&["deploy", path, "--function", function][..], extra].concat(),
        "",
    );
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let info = server
        .api(
            reqwest::Method::GET,
            &format!("/v1/functions/{function}/deployments"),
        )
        .send()
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .unwrap();
    assert_eq!(info[0]["runtime"], runtime, "{info:?}");
    file
}

/// The smallest valid core module: the magic and version 1 (not a command).
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn files_are_bytes_and_deployments_name_their_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("b64");
    // A JavaScript file given as base64 is the same file.
    let deployment = serde_json::json!({
        "files": [{ "path": "main.js", "code": { "base64": "ZXhwb3J0IGRlZmF1bHQgKCkgPT4gNDI=" } }],
        "entry": "main.js",
    });
    let response = server
        .api(reqwest::Method::POST, "/v1/functions/b64/deployments")
        .json(&deployment)
        .send()
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let info: serde_json::Value = response.json().unwrap();
    assert_eq!(info["runtime"], "js", "{info}");
    let answer = server
        .api(reqwest::Method::POST, "/v1/functions/b64/invoke")
        .json(&serde_json::Value::Null)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(answer, "42");

    // A Wasm module that is not a command: refused with what to do about
    // it, and nothing stored.
    server.create_function("wasm");
    let refused = server.deploy_module("wasm", EMPTY_MODULE);
    assert_refused(refused, Some("invalid_function"), "_start");
    let deployments = server
        .api(reqwest::Method::GET, "/v1/functions/wasm/deployments")
        .send()
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .unwrap();
    assert!(deployments.is_empty(), "{deployments:?}");
}

#[test]
fn a_wasi_command_answers_json_and_http_through_serve_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let echo = wat::parse_str(crate::WASI_ECHO).unwrap();
    let file = deploy_file(&server, dir.path(), echo, ("echo", "wasm_module"), &[]);
    // JSON in, JSON out.
    let answer: serde_json::Value = server
        .api(reqwest::Method::POST, "/v1/functions/echo/invoke")
        .json(&serde_json::json!({ "n": 7 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer, serde_json::json!({ "n": 7 }));
    // Over HTTP: the body in, stdout out.
    let answer = server
        .http()
        .post(format!("{}/fn/echo/", server.url))
        .body("plain words")
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().unwrap(), "plain words");
    // `isola invoke fn.wasm`, the module from a file or from stdin.
    let ran = crate::isola(
        &["invoke", file.to_str().unwrap(), "--payload", "[1,2]"],
        "",
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "[1,2]");
}

#[test]
fn a_wasi_http_component_serves_its_routes_through_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let hello = isola_runtime_wasm::fixtures::hello("hello from a component");
    deploy_file(&server, dir.path(), hello, ("hello", "wasm_component"), &[]);
    for path in ["/fn/hello/", "/fn/hello/any/path?q=1"] {
        let answer = server
            .http()
            .get(format!("{}{path}", server.url))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().unwrap(), "hello from a component");
    }
    // Recorded like any invocation.
    let records = server.list_of("/v1/functions/hello/invocations", 2);
    assert!(records.iter().all(|r| r["status"] == "ok"), "{records:?}");
}

/// A command whose one function is `ops` additions: costly to compile.
fn costly_module(ops: usize) -> Vec<u8> {
    let body = "(local.set 0 (i32.add (local.get 0) (i32.const 1)))\n".repeat(ops);
    let text = format!(
        r#"(module
          (func (export "_start") (local i32) {body}))"#
    );
    wat::parse_str(text).unwrap()
}

#[test]
fn compiling_is_bounded_by_the_nodes_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--wasm-compile-cpu-s", "1"]);
    server.create_function("costly");
    let started = std::time::Instant::now();
    let refused = server.deploy_module("costly", costly_module(400_000));
    let elapsed = started.elapsed();
    assert_refused(refused, Some("invalid_function"), "limit of 1 s");
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    // An invalid module is refused with the compiler's reason, and a small
    // one still deploys and runs.
    let invalid = server.deploy_module("costly", &b"\0asm\x01\0\0\0\x01\x05garbage"[..]);
    assert_refused(invalid, None, "invalid WebAssembly module");
    let small = server.deploy_module("costly", costly_module(10));
    assert!(small.status().is_success(), "{:?}", small.text());
    let answer = server
        .api(reqwest::Method::POST, "/v1/functions/costly/invoke")
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
}

#[test]
fn a_component_uses_its_functions_kv_namespace_through_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let kv = isola_runtime_wasm::fixtures::kv_roundtrip();
    let runs_as = ("counter", "wasm_component");
    deploy_file(&server, dir.path(), kv, runs_as, &["--kv", "KV"]);
    let answer = server
        .http()
        .get(format!("{}/fn/counter/", server.url))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().unwrap(), "stored value");
    // The same namespace the KV API (and JavaScript) sees.
    let stored = server
        .api(reqwest::Method::GET, "/v1/functions/counter/kv/counter")
        .send()
        .unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.text().unwrap(), "stored value");
}

/// Asserts `response` is a 400 whose error has `code` (when given) and a
/// message containing `says`.
fn assert_refused(response: reqwest::blocking::Response, code: Option<&str>, says: &str) {
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().unwrap();
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{body}");
}
