//! The two function shapes, their inputs and outputs, and console capture.

use crate::harness::*;
use isola_core::{ErrorCode, HttpRequest, InvocationOutput, LogLevel};
use serde_json::json;

crate::cases!(
    json_handler_gets_payload_and_returns_json,
    json_handler_without_payload_gets_null,
    json_handler_answers_a_post_over_http,
    undefined_result_is_null,
    context_has_env_and_invocation_id,
    fetch_handler_gets_the_request_and_returns_the_response,
    fetch_handler_invoked_with_json_gets_a_post,
    incoming_requests_and_contexts_behave_as_in_workers,
    fetch_handler_must_return_a_response,
    console_output_is_captured_with_levels,
    non_json_result_is_invalid_output,
    warm_invocations_reuse_the_isolate,
    web_platform_basics_are_present,
);

fn json_handler_gets_payload_and_returns_json() {
    let source =
        function("export default async (payload) => ({ hello: payload.name, n: payload.n * 2 })");
    let outcome = invoke(&source, json!({ "name": "world", "n": 21 }));
    assert_eq!(json(&outcome), json!({ "hello": "world", "n": 42 }));
    assert!(outcome.metrics.cold_start);
    assert!(outcome.metrics.duration_us > 0);
}

fn json_handler_without_payload_gets_null() {
    let source = function("export default (payload) => ({ isNull: payload === null })");
    assert_eq!(
        json(&invoke(&source, json!(null))),
        json!({ "isNull": true })
    );
}

fn json_handler_answers_a_post_over_http() {
    let source = function("export default async (payload) => ({ doubled: payload.n * 2 })");
    let http = |method: &str, body: &str| {
        let mut request = http_request(method);
        request.body = body.as_bytes().to_vec();
        match invoke_http(&source, request).result {
            Ok(InvocationOutput::Http(response)) => response,
            other => panic!("expected an HTTP response, got {other:?}"),
        }
    };
    let answered = http("POST", r#"{"n":21}"#);
    assert_eq!(answered.status, 200);
    assert!(answered
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&answered.body).unwrap(),
        json!({ "doubled": 42 })
    );
    let wrong_method = http("GET", "");
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method
        .headers
        .contains(&("allow".into(), "POST".into())));
    let not_json = http("POST", "{nope");
    assert_eq!(not_json.status, 400);
    assert!(String::from_utf8_lossy(&not_json.body).contains("not valid JSON"));
    // A body the host would parse for long is refused before it is.
    let huge = format!("[{}0]", "0,".repeat(600_000));
    assert_eq!(http("POST", &huge).status, 413);
    // The isolate was not spoilt by the refusals.
    assert_eq!(http("POST", r#"{"n":1}"#).status, 200);
}

fn undefined_result_is_null() {
    let source = function("export default async () => {}");
    assert_eq!(json(&invoke(&source, json!(1))), json!(null));
}

fn context_has_env_and_invocation_id() {
    let mut source = (*function("export default (p, ctx) => ({ id: ctx.invocationId, name: ctx.functionName, key: ctx.env.API_KEY, frozen: Object.isFrozen(ctx.env) })")).clone();
    source.env.insert("API_KEY".into(), "s3cret".into());
    let source = std::sync::Arc::new(source);
    let value = json(&invoke(&source, json!(null)));
    assert_eq!(value["id"], "test");
    assert_eq!(value["name"], json!(source.name));
    assert_eq!(value["key"], "s3cret");
    assert_eq!(value["frozen"], true);
}

fn fetch_handler_gets_the_request_and_returns_the_response() {
    let source = function(
        r#"export default {
            async fetch(request, env, ctx) {
                const url = new URL(request.url);
                const body = await request.text();
                return new Response(JSON.stringify({ method: request.method, path: url.pathname, q: url.searchParams.get("q"), h: request.headers.get("x-test"), body }), {
                    status: 201,
                    headers: { "content-type": "application/json", "x-reply": "yes" },
                });
            }
        }"#,
    );
    let outcome = invoke_http(
        &source,
        HttpRequest {
            method: "PUT".into(),
            url: "http://example.test/items/7?q=search".into(),
            headers: vec![("x-test".into(), "abc".into())],
            body: b"payload bytes".to_vec(),
            rest: Default::default(),
        },
    );
    let Ok(InvocationOutput::Http(response)) = outcome.result else {
        panic!("expected a response, got {:?}", outcome.result);
    };
    assert_eq!(response.status, 201);
    assert!(response.headers.contains(&("x-reply".into(), "yes".into())));
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        body,
        json!({ "method": "PUT", "path": "/items/7", "q": "search", "h": "abc", "body": "payload bytes" })
    );
}

/// The incoming `Request` (built from the host's own inner request) and
/// `ctx` behave as the Fetch standard and Workers say: cloned, copied into
/// a new `Request`, re-targeted, headers immutable; `ctx` frozen, its
/// methods usable detached.
fn incoming_requests_and_contexts_behave_as_in_workers() {
    let source = function(
        r#"export default {
            async fetch(request, env, ctx) {
                const copy = new Request(request, { method: "POST", body: "changed" });
                const moved = new Request("http://elsewhere.test/x", { method: request.method, headers: request.headers });
                const clone = request.clone();
                let immutable = false;
                try { request.headers.set("x-test", "no"); } catch { immutable = true; }
                const { waitUntil } = ctx;
                waitUntil(Promise.resolve(1));
                ctx.waitUntil(Promise.reject(new Error("ignored")));
                ctx.passThroughOnException();
                let frozen = Object.isFrozen(ctx);
                try { ctx.invocationId = "forged"; } catch {}
                return Response.json({
                    method: request.method, url: request.url, redirect: request.redirect,
                    h: request.headers.get("x-test"), immutable,
                    copy: [copy.method, copy.url, await copy.text(), copy.headers.get("x-test")],
                    moved: [moved.method, moved.url, moved.headers.get("x-test")],
                    clone: [clone.method, clone.url, await clone.text()],
                    body: await request.text(),
                    frozen, id: ctx.invocationId,
                });
            }
        }"#,
    );
    let outcome = invoke_http(
        &source,
        HttpRequest {
            method: "PUT".into(),
            url: "http://example.test/items/7?q=1".into(),
            headers: vec![("x-test".into(), "abc".into())],
            body: b"original".to_vec(),
            rest: Default::default(),
        },
    );
    let Ok(InvocationOutput::Http(response)) = outcome.result else {
        panic!("expected a response, got {:?}", outcome.result);
    };
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let url = "http://example.test/items/7?q=1";
    assert_eq!(
        body,
        json!({
            "method": "PUT", "url": url, "redirect": "follow", "h": "abc", "immutable": true,
            "copy": ["POST", url, "changed", "abc"],
            "moved": ["PUT", "http://elsewhere.test/x", "abc"],
            "clone": ["PUT", url, "original"],
            "body": "original", "frozen": true, "id": "test",
        })
    );
}

fn fetch_handler_invoked_with_json_gets_a_post() {
    let source = function("export default { async fetch(r) { return Response.json({ m: r.method, got: await r.json() }) } }");
    let outcome = invoke(&source, json!({ "a": 1 }));
    let Ok(InvocationOutput::Http(response)) = outcome.result else {
        panic!("expected a response, got {:?}", outcome.result);
    };
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body, json!({ "m": "POST", "got": { "a": 1 } }));
}

fn fetch_handler_must_return_a_response() {
    let source = function("export default { fetch() { return 'not a response' } }");
    let error = assert_fails(&source, ErrorCode::UncaughtException);
    assert!(
        error.message.contains("must return a Response"),
        "{error:?}"
    );
}

fn console_output_is_captured_with_levels() {
    let source = function(
        "export default () => { console.log('hello', { a: 1 }); console.debug('dbg'); console.warn('careful'); console.error(new Error('bad').message); return 1 }",
    );
    let outcome = invoke(&source, json!(null));
    let logs: Vec<_> = outcome
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        logs,
        vec![
            (LogLevel::Info, "hello { a: 1 }"),
            (LogLevel::Debug, "dbg"),
            (LogLevel::Warn, "careful"),
            (LogLevel::Error, "bad"),
        ]
    );
}

fn non_json_result_is_invalid_output() {
    let source = function("export default () => 10n");
    let error = assert_fails(&source, ErrorCode::InvalidOutput);
    assert!(error.message.contains("BigInt"), "{error:?}");
    let cyclic = function("export default () => { const a = {}; a.self = a; return a }");
    assert_fails(&cyclic, ErrorCode::InvalidOutput);
}

fn warm_invocations_reuse_the_isolate() {
    // A quiet executor of its own: with two idle workers, a function's
    // invocations go to its home worker, where its warm isolate waits.
    let executor = isola_runtime_js::Executor::new(isola_runtime_js::ExecutorConfig {
        workers: 2,
        ..Default::default()
    });
    let source = function("let count = 0; export default () => ++count");
    let first = invoke_on(&executor, &source, json!(null));
    assert!(first.metrics.cold_start);
    for expected in 2..=5 {
        let next = invoke_on(&executor, &source, json!(null));
        assert!(
            !next.metrics.cold_start,
            "invocation {expected} started cold"
        );
        assert_eq!(json(&next), json!(expected));
    }
}

fn web_platform_basics_are_present() {
    let source = function(
        r#"export default async () => {
            const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc"));
            const hex = [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, "0")).join("");
            const stream = new ReadableStream({ start(c) { c.enqueue("a"); c.enqueue("b"); c.close(); } });
            let streamed = ""; for await (const chunk of stream) streamed += chunk;
            await new Promise(r => setTimeout(r, 5));
            return {
                hex, streamed,
                b64: btoa("hi"),
                url: new URL("../b?c=1", "https://x.test/a/").href,
                clone: structuredClone({ d: new Date(0) }).d.getTime(),
                intl: new Intl.NumberFormat("en-US").format(1234.5),
                wasm: typeof WebAssembly.instantiate,
                perf: typeof performance.now(),
                abort: new AbortController().signal.aborted,
            };
        }"#,
    );
    let value = json(&invoke(&source, json!(null)));
    assert_eq!(
        value["hex"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(value["streamed"], "ab");
    assert_eq!(value["b64"], "aGk=");
    assert_eq!(value["url"], "https://x.test/b?c=1");
    assert_eq!(value["clone"], 0);
    assert_eq!(value["intl"], "1,234.5");
    assert_eq!(value["wasm"], "function");
    assert_eq!(value["perf"], "number");
    assert_eq!(value["abort"], false);
}
