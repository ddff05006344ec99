//! A failing function answers public traffic like workerd and `deno serve`
//! do: a bare 500 with nothing about the cause, which goes to its owner
//! (the management API, the invocation record and its logs) instead.

use crate::server::Server;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const THROWING: &str = "export default { fetch() { throw new Error('db password is hunter2') } }";

#[test]
fn a_throwing_handler_gets_a_bare_500_in_public_and_details_for_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function("thrower", THROWING);

    let public = server
        .http()
        .get(format!("{}/fn/thrower/", server.url))
        .send()
        .unwrap();
    assert_eq!(public.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(public.headers().get("content-type").is_none());
    let id = public.headers()["x-isola-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = public.text().unwrap();
    assert_eq!(body, "Internal Server Error");
    assert!(!body.contains("hunter2") && !body.contains("ext:"));

    let owner = server
        .api(Method::POST, "/v1/functions/thrower/invoke")
        .send()
        .unwrap();
    assert_eq!(owner.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let details: Value = owner.json().unwrap();
    assert_eq!(details["error"]["code"], "uncaught_exception");
    assert!(details["error"]["message"]
        .as_str()
        .unwrap()
        .contains("hunter2"));

    let records = server.list_of("/v1/functions/thrower/invocations", 2);
    let record = records.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(record["error_code"], "uncaught_exception");
    assert!(
        record["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("db password is hunter2")),
        "{record}"
    );
    let logs: Vec<Value> = server
        .api(Method::GET, "/v1/functions/thrower/logs")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        logs.iter().any(|l| l["invocation_id"] == id.as_str()
            && l["level"] == "error"
            && l["message"].as_str().unwrap().contains("hunter2")),
        "{logs:?}"
    );
}

#[test]
fn unknown_functions_get_a_bare_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.create_function("undeployed");
    for path in ["/fn/ghost/", "/fn/undeployed/x"] {
        let response = server
            .http()
            .get(format!("{}{path}", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(response.headers().get("content-type").is_none());
        assert_eq!(response.text().unwrap(), "Not Found");
    }
    // Its owner is told which: no such function, or not deployed yet.
    for (name, says) in [
        ("ghost", "does not exist"),
        ("undeployed", "no active deployment"),
    ] {
        let out = server.cli(&["functions", "invoke", name], "");
        assert!(!out.status.success());
        let said = crate::stderr(&out);
        assert!(said.contains(says), "{name}: {said}");
    }
}
