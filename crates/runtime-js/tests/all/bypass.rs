//! The ways around the limits that a hostile user found (issue 11): each
//! fails alone, with the right error, and the node keeps serving.

use crate::harness::*;
use isola_core::{BodyStream, ErrorCode, FunctionSource, HttpRequest, Limits, SourceFile};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

crate::cases!(
    atomics_wait_cannot_block_a_worker,
    the_wall_limit_stops_running_javascript,
    deeply_nested_typescript_is_a_syntax_error,
    unread_request_bodies_are_dropped_with_the_invocation,
    http_requests_to_a_json_function_force_no_cold_start,
    stacks_show_no_internal_frames,
    empty_console_lines_are_capped,
    json_results_that_explode_as_values_are_refused,
    memory_admission_refuses_past_the_node_budget,
    console_callbacks_cannot_outlive_the_limits,
);

fn atomics_wait_cannot_block_a_worker() {
    let limits = Limits {
        timeout_ms: 500,
        ..Limits::default()
    };
    let source = function_with(
        "export default () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 6000)",
        limits,
    );
    let started = Instant::now();
    let error = assert_fails(&source, ErrorCode::UncaughtException);
    assert!(error.message.contains("Atomics.wait"), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_node_healthy();
}

fn the_wall_limit_stops_running_javascript() {
    // A CPU budget larger than the wall budget: only the watchdog's wall
    // check can end this loop in time, since the thread never yields.
    let limits = Limits {
        cpu_ms: 20_000,
        timeout_ms: 300,
        ..Limits::default()
    };
    let started = Instant::now();
    assert_fails(
        &function_with("export default () => { for (;;) {} }", limits),
        ErrorCode::WallTimeout,
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_fails(
        &function_with("for (;;) {} export default () => 1", limits),
        ErrorCode::WallTimeout,
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_node_healthy();
}

fn typescript(code: String) -> Arc<FunctionSource> {
    let mut source = (*function(&code)).clone();
    source.files = vec![SourceFile {
        path: "main.ts".into(),
        code: code.into(),
    }];
    source.entry = "main.ts".into();
    Arc::new(source)
}

fn deeply_nested_typescript_is_a_syntax_error() {
    let parens = format!(
        "export default (): number => {}1{};",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let error = assert_fails(&typescript(parens), ErrorCode::SyntaxError);
    assert!(error.message.contains("nests more than"), "{error:?}");
    let unary = format!("export default (): boolean => {}true;", "!".repeat(20_000));
    assert_fails(&typescript(unary), ErrorCode::SyntaxError);
    // Ordinary nesting still works.
    let fine = format!(
        "export default (): number => {}1{};",
        "(".repeat(100),
        ")".repeat(100)
    );
    assert_eq!(json(&invoke(&typescript(fine), json!(null))), json!(1));
    assert_node_healthy();
}

fn unread_request_bodies_are_dropped_with_the_invocation() {
    let source = function("export default { fetch() { return new Response('ignored') } }");
    for method in ["POST", "GET"] {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        sender.try_send(Ok(vec![1; 1024])).unwrap();
        let outcome = invoke_http(
            &source,
            HttpRequest {
                method: method.into(),
                url: "http://test/".into(),
                headers: vec![],
                body: vec![0; 16],
                rest: BodyStream::new(receiver),
            },
        );
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
        let started = Instant::now();
        while !sender.is_closed() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{method}: the unread body is still held after the invocation"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert_node_healthy();
}

/// The status of the host's answer to an HTTP request a JSON function
/// does not take (issue 18: JSON functions take a POST).
fn refused_method(outcome: &isola_core::Outcome) -> u16 {
    match &outcome.result {
        Ok(isola_core::InvocationOutput::Http(response)) => response.status,
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
}

fn http_requests_to_a_json_function_force_no_cold_start() {
    let executor = isola_runtime_js::Executor::new(isola_runtime_js::ExecutorConfig {
        workers: 1,
        ..Default::default()
    });
    let source = function("export default () => 'json'");
    let cold = |executor: &isola_runtime_js::Executor| {
        executor
            .stats()
            .cold_starts
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Once before the function is known, once after.
    for _ in 0..2 {
        let outcome = block_on(executor.run(isola_core::Invocation {
            id: "t".into(),
            function: source.clone(),
            input: isola_core::InvocationInput::Http(http_request("GET")),
        }));
        assert_eq!(refused_method(&outcome), 405);
    }
    assert_eq!(
        json(&invoke_on(&executor, &source, json!(null))),
        json!("json")
    );
    let before = cold(&executor);
    for _ in 0..20 {
        let outcome = block_on(executor.run(isola_core::Invocation {
            id: "t".into(),
            function: source.clone(),
            input: isola_core::InvocationInput::Http(http_request("GET")),
        }));
        assert_eq!(refused_method(&outcome), 405);
    }
    let outcome = invoke_on(&executor, &source, json!(null));
    assert!(!outcome.metrics.cold_start, "{:?}", outcome.metrics);
    assert_eq!(cold(&executor), before, "HTTP requests started isolates");
    executor.shutdown();
}

fn stacks_show_no_internal_frames() {
    let source =
        function("export default { async fetch() { await null; throw new Error('boom') } }");
    let outcome = invoke_http(&source, http_request("GET"));
    let error = error(&outcome);
    let stack = error.stack.unwrap_or_default();
    assert!(stack.contains("isola:///main.js"), "{stack}");
    assert!(!stack.contains("ext:"), "{stack}");
    let rejected =
        function("export default async () => { Promise.reject(new Error('lost')); return 1 }");
    let outcome = invoke(&rejected, json!(null));
    let logs: Vec<_> = outcome.logs.iter().map(|l| l.message.clone()).collect();
    assert!(logs.iter().any(|l| l.contains("lost")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("ext:")), "{logs:?}");
}

fn empty_console_lines_are_capped() {
    let limits = Limits {
        cpu_ms: 10_000,
        ..Limits::default()
    };
    let source = function_with(
        "export default () => { for (let i = 0; i < 20000; i++) console.log(); return 1 }",
        limits,
    );
    let outcome = invoke(&source, json!(null));
    assert_eq!(json(&outcome), json!(1));
    assert!(
        outcome.logs.len() <= 1001,
        "{} lines kept",
        outcome.logs.len()
    );
    let notice = outcome.logs.last().unwrap();
    assert!(notice.message.contains("dropped"), "{notice:?}");
}

fn json_results_that_explode_as_values_are_refused() {
    let limits = Limits {
        memory_mb: 32,
        cpu_ms: 10_000,
        ..Limits::default()
    };
    // A few objects in memory; 2 million values and ~6 MB as JSON text.
    let source = function_with(
        "export default () => { let x = []; for (let i = 0; i < 20; i++) x = [x, x]; return x }",
        limits,
    );
    let error = assert_fails(&source, ErrorCode::InvalidOutput);
    assert!(error.message.contains("too large"), "{error:?}");
    assert_node_healthy();
}

fn memory_admission_refuses_past_the_node_budget() {
    let executor = isola_runtime_js::Executor::new(isola_runtime_js::ExecutorConfig {
        workers: 1,
        max_admitted_memory_mb: 300,
        ..Default::default()
    });
    let limits = Limits {
        memory_mb: 128,
        ..Limits::default()
    };
    let sleeper = function_with(
        "export default () => new Promise(r => setTimeout(() => r('slept'), 500))",
        limits,
    );
    let outcomes = block_on(async {
        let runs = (0..3).map(|_| {
            executor.run(isola_core::Invocation {
                id: "t".into(),
                function: sleeper.clone(),
                input: isola_core::InvocationInput::Json(json!(null)),
            })
        });
        futures::future::join_all(runs).await
    });
    let refused = outcomes
        .iter()
        .filter(|o| matches!(&o.result, Err(e) if e.code == ErrorCode::Unavailable))
        .count();
    assert_eq!(
        refused,
        1,
        "{:?}",
        outcomes.iter().map(|o| &o.result).collect::<Vec<_>>()
    );
    // Reservations end with their invocations.
    assert_eq!(
        json(&invoke_on(&executor, &sleeper, json!(null))),
        json!("slept")
    );
    executor.shutdown();
}

fn console_callbacks_cannot_outlive_the_limits() {
    // Code that runs inside console.log (an inspect hook, a getter) and
    // loops: a termination there must not be swallowed.
    for code in [
        "export default () => { for (;;) console.log() }",
        "export default () => { const o = { [Symbol.for('Deno.customInspect')]() { for (;;) {} } }; for (;;) { try { console.log(o) } catch {} } }",
        "export default () => { const o = { get x() { for (;;) {} } }; for (;;) { try { console.log(o) } catch {} } }",
        "export default async () => { for (;;) { Promise.reject({ get stack() { for (;;) {} } }); await null } }",
        // Arguments WebCrypto's native code converts: a sequence whose
        // `next` getter loops, a dictionary member that loops.
        "export default async () => { const usages = { [Symbol.iterator]() { return { get next() { for (;;) {} } } } }; for (;;) { try { await crypto.subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, false, usages) } catch {} } }",
        "export default async () => { const hash = { get name() { for (;;) {} } }; for (;;) { try { await crypto.subtle.generateKey({ name: 'HMAC', hash }, false, ['sign']) } catch {} } }",
    ] {
        let limits = Limits {
            timeout_ms: 2_000,
            ..Limits::default()
        };
        let started = Instant::now();
        let outcome = invoke(&function_with(code, limits), json!(null));
        let error = error(&outcome);
        assert!(
            matches!(error.code, ErrorCode::CpuLimit | ErrorCode::WallTimeout),
            "{code}: {error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{code}: {:?}", started.elapsed());
    }
    assert_node_healthy();
}
