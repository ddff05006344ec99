//! `/v1/functions/<name>/logs`: the Server-Sent Events stream resumes where
//! the client says, even when nothing came after that point yet.

use crate::server::{Server, TOKEN};
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};

/// Invokes `name` with `{n}` through the management API.
fn invoke(server: &Server, name: &str, n: &str) {
    let response = server
        .api(Method::POST, &format!("/v1/functions/{name}/invoke"))
        .json(&json!({ "n": n }))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn follow_after_the_last_line_sends_only_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function(
        "chatty",
        "export default (p) => { console.log('said', p.n); return p.n }",
    );
    invoke(&server, "chatty", "old-1");
    invoke(&server, "chatty", "old-2");
    let lines = server.list_of("/v1/functions/chatty/logs", 2);
    let last = lines.last().unwrap()["seq"].as_i64().unwrap();

    // Nothing comes after `last` yet: the first page is empty.
    let stream = Client::builder()
        .build()
        .unwrap()
        .get(format!(
            "{}/v1/functions/chatty/logs?follow=true&after={last}",
            server.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    invoke(&server, "chatty", "new");
    let data = BufReader::new(stream)
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("data:"))
        .expect("an event");
    let event: Value = serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(event["message"], "said new", "replayed old lines: {event}");
    assert!(event["seq"].as_i64().unwrap() > last);
}
