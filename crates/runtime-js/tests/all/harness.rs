//! A shared executor and helpers for writing runtime tests.

use isola_core::{
    ErrorCode, FunctionError, FunctionSource, HttpRequest, Invocation, InvocationInput,
    InvocationOutput, Limits, Outcome,
};
use isola_runtime_js::{Executor, ExecutorConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A named test case.
pub type Case = (&'static str, fn());

/// Runs every case through libtest-mimic.
pub fn run(groups: &[&[Case]]) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let trials = groups
        .iter()
        .flat_map(|group| group.iter())
        .map(|&(name, test)| {
            libtest_mimic::Trial::test(name, move || {
                std::panic::catch_unwind(test).map_err(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "test panicked".into());
                    message.into()
                })
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

fn tokio() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The executor shared by most tests.
pub fn executor() -> &'static Executor {
    static EXECUTOR: OnceLock<Executor> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        Executor::new(ExecutorConfig {
            workers: 2,
            ..ExecutorConfig::default()
        })
    })
}

/// Runs a future on the tests' tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio().block_on(future)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A single-module function with a unique id (so it starts cold).
pub fn function(code: &str) -> Arc<FunctionSource> {
    function_with(code, Limits::default())
}

/// Like [`function`], with limits.
pub fn function_with(code: &str, limits: Limits) -> Arc<FunctionSource> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut source = FunctionSource::single_module(format!("test-{id}"), format!("fn{id}"), code);
    source.limits = limits;
    Arc::new(source)
}

/// Invokes `function` with a JSON payload on `executor`.
pub fn invoke_on(
    executor: &Executor,
    function: &Arc<FunctionSource>,
    payload: serde_json::Value,
) -> Outcome {
    block_on(executor.run(Invocation {
        id: "test".into(),
        function: function.clone(),
        input: InvocationInput::Json(payload),
    }))
}

/// Invokes `function` with a JSON payload on the shared executor.
pub fn invoke(function: &Arc<FunctionSource>, payload: serde_json::Value) -> Outcome {
    invoke_on(executor(), function, payload)
}

/// A bodiless HTTP request to `http://test/`.
pub fn http_request(method: &str) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        url: "http://test/".into(),
        headers: vec![],
        body: vec![],
        rest: Default::default(),
    }
}

/// Invokes `function` with an HTTP request on the shared executor.
pub fn invoke_http(function: &Arc<FunctionSource>, request: HttpRequest) -> Outcome {
    block_on(executor().run(Invocation {
        id: "test".into(),
        function: function.clone(),
        input: InvocationInput::Http(request),
    }))
}

/// The JSON result of an outcome, or a panic naming the error.
pub fn json(outcome: &Outcome) -> serde_json::Value {
    match &outcome.result {
        Ok(InvocationOutput::Json(value)) => value.clone(),
        other => panic!("expected a JSON result, got {other:?}"),
    }
}

/// The error of an outcome, or a panic naming the result.
pub fn error(outcome: &Outcome) -> FunctionError {
    match &outcome.result {
        Err(error) => error.clone(),
        Ok(output) => panic!("expected an error, got {output:?}"),
    }
}

/// Runs `code` once and asserts it fails with `code`.
pub fn assert_fails(source: &Arc<FunctionSource>, expected: ErrorCode) -> FunctionError {
    let outcome = invoke(source, serde_json::Value::Null);
    let error = error(&outcome);
    assert_eq!(error.code, expected, "unexpected error: {error:?}");
    error
}

/// Asserts that the node still answers a normal function.
pub fn assert_node_healthy() {
    let source = function("export default async (p) => ({ ok: p.n + 1 })");
    let outcome = invoke(&source, serde_json::json!({ "n": 41 }));
    assert_eq!(json(&outcome), serde_json::json!({ "ok": 42 }));
}

/// Declares a module's `TESTS` list from its test functions.
#[macro_export]
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        pub const TESTS: &[$crate::harness::Case] =
            &[$((concat!(module_path!(), "::", stringify!($name)), $name)),*];
    };
}
