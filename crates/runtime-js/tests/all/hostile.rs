//! Hostile functions fail alone, with the right error, and the node keeps
//! serving.

use crate::harness::*;
use isola_core::{ErrorCode, Limits};
use serde_json::json;

crate::cases!(
    endless_loop_hits_the_cpu_limit,
    microtask_loop_hits_the_cpu_limit,
    wasm_loop_hits_the_cpu_limit,
    endless_loop_at_top_level_is_stopped,
    heap_bomb_hits_the_memory_limit,
    heap_bomb_beside_buffers_hits_the_memory_limit,
    array_buffer_bomb_hits_the_memory_limit,
    string_doubling_fails_cleanly,
    deep_recursion_is_an_uncaught_exception,
    throwing_a_non_error_is_reported,
    unhandled_rejection_is_logged_without_failing,
    waiting_past_the_wall_limit_times_out,
    waiting_is_not_charged_as_cpu,
    cpu_charged_is_what_ran_within_the_wall_time,
    invalid_limits_are_refused,
);

fn endless_loop_hits_the_cpu_limit() {
    let started = std::time::Instant::now();
    let error = assert_fails(
        &function("export default () => { for (;;) {} }"),
        ErrorCode::CpuLimit,
    );
    assert!(error.message.contains("50 ms"), "{error:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_node_healthy();
}

fn microtask_loop_hits_the_cpu_limit() {
    assert_fails(
        &function("export default async () => { for (;;) await null }"),
        ErrorCode::CpuLimit,
    );
    assert_node_healthy();
}

fn wasm_loop_hits_the_cpu_limit() {
    // (module (func (export "spin") (loop (br 0))))
    let source = function(
        r#"const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,4,1,96,0,0,3,2,1,0,7,8,1,4,115,112,105,110,0,0,10,9,1,7,0,3,64,12,0,11,11]);
           export default async () => { const { instance } = await WebAssembly.instantiate(bytes); instance.exports.spin(); }"#,
    );
    assert_fails(&source, ErrorCode::CpuLimit);
    assert_node_healthy();
}

fn endless_loop_at_top_level_is_stopped() {
    let limits = Limits {
        cpu_ms: 20,
        ..Limits::default()
    };
    assert_fails(
        &function_with("for (;;) {} export default () => 1", limits),
        ErrorCode::CpuLimit,
    );
    assert_node_healthy();
}

fn heap_bomb_hits_the_memory_limit() {
    let limits = Limits {
        memory_mb: 32,
        cpu_ms: 10_000,
        ..Limits::default()
    };
    let source = function_with(
        "export default () => { const all = []; for (;;) all.push(new Array(100000).fill({ x: 1 })) }",
        limits,
    );
    let error = assert_fails(&source, ErrorCode::MemoryLimit);
    assert!(error.message.contains("32 MiB"), "{error:?}");
    assert_node_healthy();
}

fn heap_bomb_beside_buffers_hits_the_memory_limit() {
    // Buffers over a quarter of the limit make the watchdog weigh heap and
    // native memory together while the heap runs into V8's own limit.
    for bomb in [
        "for (;;) all.push(new Array(100000).fill({ x: 1 }))",
        "let s = 'x'; for (;;) { s = s + s; all.push(s.slice(1)) }",
    ] {
        let source = function_with(
            &format!(
                "export default () => {{ const keep = []; for (let i = 0; i < 12; i++) keep.push(new Uint8Array(1 << 20).fill(1)); const all = [keep]; {bomb} }}"
            ),
            Limits {
                memory_mb: 32,
                cpu_ms: 10_000,
                ..Limits::default()
            },
        );
        let error = error(&invoke(&source, serde_json::json!(null)));
        assert!(
            matches!(
                error.code,
                ErrorCode::MemoryLimit | ErrorCode::UncaughtException
            ),
            "{error:?}"
        );
    }
    assert_node_healthy();
}

fn array_buffer_bomb_hits_the_memory_limit() {
    let limits = Limits {
        memory_mb: 32,
        cpu_ms: 10_000,
        ..Limits::default()
    };
    let source = function_with(
        "export default () => { const all = []; for (;;) all.push(new Uint8Array(1 << 20)) }",
        limits,
    );
    assert_fails(&source, ErrorCode::MemoryLimit);
    assert_node_healthy();
}

fn string_doubling_fails_cleanly() {
    let limits = Limits {
        cpu_ms: 10_000,
        ..Limits::default()
    };
    let source = function_with(
        "export default () => { let s = 'x'; for (;;) { s = s + s; s.charCodeAt(s.length - 1); } }",
        limits,
    );
    let outcome = invoke(&source, json!(null));
    let error = error(&outcome);
    assert!(
        matches!(
            error.code,
            ErrorCode::UncaughtException | ErrorCode::MemoryLimit
        ),
        "{error:?}"
    );
    assert_node_healthy();
}

fn deep_recursion_is_an_uncaught_exception() {
    let error = assert_fails(
        &function("const f = (n) => f(n + 1) + 1; export default () => f(0)"),
        ErrorCode::UncaughtException,
    );
    assert!(
        error.message.contains("Maximum call stack size exceeded"),
        "{error:?}"
    );
    assert!(error.stack.unwrap_or_default().contains("isola:///main.js"));
    assert_node_healthy();
}

fn throwing_a_non_error_is_reported() {
    let error = assert_fails(
        &function("export default () => { throw { reason: 'nope' } }"),
        ErrorCode::UncaughtException,
    );
    assert!(
        error.message.contains("nope") || error.message.contains("Object"),
        "{error:?}"
    );
    let error = assert_fails(
        &function("export default async () => { throw 'plain string' }"),
        ErrorCode::UncaughtException,
    );
    assert!(error.message.contains("plain string"), "{error:?}");
    assert_node_healthy();
}

fn unhandled_rejection_is_logged_without_failing() {
    let source =
        function("export default async () => { Promise.reject(new Error('lost')); return 'done' }");
    let outcome = invoke(&source, json!(null));
    assert_eq!(json(&outcome), json!("done"));
    let logged = outcome
        .logs
        .iter()
        .any(|l| l.message.contains("Uncaught (in promise)") && l.message.contains("lost"));
    assert!(logged, "rejection not logged: {:?}", outcome.logs);
    assert_node_healthy();
}

fn waiting_past_the_wall_limit_times_out() {
    let limits = Limits {
        timeout_ms: 200,
        ..Limits::default()
    };
    let source = function_with(
        "export default () => new Promise(r => setTimeout(r, 60_000))",
        limits,
    );
    let started = std::time::Instant::now();
    assert_fails(&source, ErrorCode::WallTimeout);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A promise nothing can settle ends the invocation too.
    let stuck = function("export default () => new Promise(() => {})");
    assert_fails(&stuck, ErrorCode::UncaughtException);
    assert_node_healthy();
}

/// A slice is charged at least the CPU it used and never more than its
/// wall time: short slices (charged their wall time) and a long one (its
/// CPU clock, read once at its end) alike.
fn cpu_charged_is_what_ran_within_the_wall_time() {
    let limits = Limits {
        cpu_ms: 2_000,
        ..Limits::default()
    };
    let spin = function_with(
        "export default (p) => { const end = Date.now() + p.ms; let n = 0; while (Date.now() < end) n++; return n >= 0 }",
        limits,
    );
    for ms in [0, 40] {
        let outcome = invoke(&spin, json!({ "ms": ms }));
        assert_eq!(json(&outcome), json!(true));
        let metrics = outcome.metrics;
        assert!(metrics.cpu_us <= metrics.duration_us, "{metrics:?}");
        // Spinning on the clock is CPU time, less what the machine took
        // from the thread meanwhile.
        assert!(metrics.cpu_us >= ms * 1000 / 2, "{ms} ms: {metrics:?}");
    }
}

fn waiting_is_not_charged_as_cpu() {
    let limits = Limits {
        cpu_ms: 20,
        ..Limits::default()
    };
    let source = function_with(
        "export default async () => { await new Promise(r => setTimeout(r, 300)); return 'slept' }",
        limits,
    );
    let outcome = invoke(&source, json!(null));
    assert_eq!(json(&outcome), json!("slept"));
    assert!(outcome.metrics.cpu_us < 20_000, "{:?}", outcome.metrics);
    assert!(
        outcome.metrics.duration_us >= 300_000,
        "{:?}",
        outcome.metrics
    );
}

fn invalid_limits_are_refused() {
    let limits = Limits {
        memory_mb: 1,
        ..Limits::default()
    };
    let error = assert_fails(
        &function_with("export default () => 1", limits),
        ErrorCode::InvalidInput,
    );
    assert!(error.message.contains("memory_mb"), "{error:?}");
}
