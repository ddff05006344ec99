//! The seams for WebAssembly functions: files are bytes (base64 in JSON),
//! a deployment says which runtime runs it, and one dispatching invoker
//! sends each function to its runtime. This node has no Wasm runtime yet,
//! so a Wasm deployment is refused with a clear error and nothing stored.

use crate::server::Server;

/// The smallest valid core module: the magic and version 1.
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

    // A Wasm module, as a bare upload: refused by a node without a Wasm
    // runtime, with what to do about it, and nothing stored.
    server.create_function("wasm");
    let refused = server.deploy_module("wasm", EMPTY_MODULE);
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "invalid_function", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebAssembly"),
        "{body}"
    );
    let deployments = server
        .api(reqwest::Method::GET, "/v1/functions/wasm/deployments")
        .send()
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .unwrap();
    assert!(deployments.is_empty(), "{deployments:?}");

    // The CLI reads a .wasm file as bytes (not as UTF-8 text).
    let file = dir.path().join("fn.wasm");
    std::fs::write(&file, EMPTY_MODULE).unwrap();
    let deployed = server.cli(
        &["deploy", file.to_str().unwrap(), "--function", "wasm"],
        "",
    );
    assert!(!deployed.status.success());
    let said = String::from_utf8_lossy(&deployed.stderr);
    assert!(
        said.contains("WebAssembly") && !said.contains("UTF-8"),
        "{said}"
    );
}
