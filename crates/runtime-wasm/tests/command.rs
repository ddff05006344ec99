//! WASI preview 1 commands end to end through the runtime, from WAT text:
//! stdin to stdout, exit codes, stderr as logs, and hostile modules; and
//! components (`components`).

use isola_core::{
    ErrorCode, FunctionSource, Invocation, InvocationInput, InvocationOutput, Invoker, Limits,
    Outcome, RuntimeKind,
};
use isola_runtime_wasm::WasmRuntime;
use std::sync::Arc;

/// WASI's fd_read / fd_write / proc_exit, and a page of memory.
const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
"#;

/// Copies stdin to stdout, then writes "done" to stderr.
const ECHO: &str = r#"
  (data (i32.const 512) "done\n")
  (func (export "_start")
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.load (i32.const 8)))
        (then
          (i32.store (i32.const 16) (i32.const 512))
          (i32.store (i32.const 20) (i32.const 5))
          (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 24)))
          (return)))
      (i32.store (i32.const 16) (i32.const 1024))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $again)))
"#;

fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {PRELUDE} {body})")).unwrap()
}

fn function(bytes: Vec<u8>, limits: Limits) -> Arc<FunctionSource> {
    let mut source = FunctionSource::single_module(format!("wasm-{}", bytes.len()), "f", "");
    source.runtime = RuntimeKind::detect(&bytes);
    source.entry = "main.wasm".into();
    source.files[0].path = "main.wasm".into();
    source.files[0].code = bytes;
    source.limits = limits;
    Arc::new(source)
}

async fn invoke(
    runtime: &WasmRuntime,
    function: Arc<FunctionSource>,
    payload: serde_json::Value,
) -> Outcome {
    runtime
        .invoke(Invocation {
            id: "i".into(),
            function,
            input: InvocationInput::Json(payload),
        })
        .await
}

fn code(outcome: &Outcome) -> ErrorCode {
    outcome.result.as_ref().unwrap_err().code
}

#[tokio::test]
async fn a_command_echoes_its_input_and_logs_its_stderr() {
    let runtime = WasmRuntime::new().unwrap();
    let echo = function(module(ECHO), Limits::default());
    runtime.prepare(echo.clone()).await.unwrap();
    let outcome = invoke(&runtime, echo, serde_json::json!({ "a": [1, 2] })).await;
    match &outcome.result {
        Ok(InvocationOutput::Json(value)) => assert_eq!(value, &serde_json::json!({ "a": [1, 2] })),
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.logs.len(), 1);
    assert_eq!(outcome.logs[0].message, "done");
}

#[tokio::test]
async fn exit_codes_and_traps_are_function_errors() {
    let runtime = WasmRuntime::new().unwrap();
    let exits = function(
        module(r#"(func (export "_start") (call $proc_exit (i32.const 3)))"#),
        Limits::default(),
    );
    let outcome = invoke(&runtime, exits, serde_json::Value::Null).await;
    assert_eq!(code(&outcome), ErrorCode::UncaughtException);
    assert!(outcome.result.unwrap_err().message.contains("code 3"));
    let traps = function(
        module(r#"(func (export "_start") unreachable)"#),
        Limits::default(),
    );
    let outcome = invoke(&runtime, traps, serde_json::Value::Null).await;
    assert_eq!(code(&outcome), ErrorCode::UncaughtException);
    assert!(outcome.result.unwrap_err().message.contains("unreachable"));
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_its_cpu_limit() {
    let runtime = WasmRuntime::new().unwrap();
    let limits = Limits {
        cpu_ms: 20,
        ..Limits::default()
    };
    let spins = function(
        module(r#"(func (export "_start") (loop $l (br $l)))"#),
        limits,
    );
    let started = std::time::Instant::now();
    let outcome = invoke(&runtime, spins, serde_json::Value::Null).await;
    assert_eq!(code(&outcome), ErrorCode::CpuLimit, "{:?}", outcome.result);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The runtime goes on serving.
    let echo = function(module(ECHO), Limits::default());
    assert!(invoke(&runtime, echo, serde_json::json!(1))
        .await
        .result
        .is_ok());
}

#[tokio::test]
async fn growing_memory_past_the_limit_is_a_memory_limit() {
    let runtime = WasmRuntime::new().unwrap();
    let limits = Limits {
        memory_mb: 8,
        ..Limits::default()
    };
    // 200 pages of 64 KiB: 12.5 MiB.
    let grows = function(
        module(r#"(func (export "_start") (drop (memory.grow (i32.const 200))))"#),
        limits,
    );
    let outcome = invoke(&runtime, grows, serde_json::Value::Null).await;
    assert_eq!(
        code(&outcome),
        ErrorCode::MemoryLimit,
        "{:?}",
        outcome.result
    );
}

#[tokio::test]
async fn huge_output_is_cut_off() {
    let runtime = WasmRuntime::new().unwrap();
    // Writes the first 64 KiB of memory to stdout 1,000 times (62.5 MiB).
    let floods = function(
        module(
            r#"(func (export "_start") (local $n i32)
              (i32.store (i32.const 0) (i32.const 0))
              (i32.store (i32.const 4) (i32.const 65536))
              (loop $l
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $n) (i32.const 1000)))))"#,
        ),
        // What is tested is the output's bound, not the CPU limit: copying
        // 62.5 MiB takes about 50 ms in a debug build on a busy machine.
        Limits {
            cpu_ms: 5_000,
            ..Limits::default()
        },
    );
    let outcome = invoke(&runtime, floods, serde_json::Value::Null).await;
    match &outcome.result {
        Ok(InvocationOutput::Json(serde_json::Value::String(text))) => {
            assert!(text.len() <= 16 << 20, "{}", text.len())
        }
        other => panic!("{:?}", other.as_ref().map(|_| ())),
    }
}

#[tokio::test]
async fn invalid_and_truncated_modules_are_refused_at_deploy() {
    let runtime = WasmRuntime::new().unwrap();
    let whole = module(ECHO);
    for bytes in [
        whole[..whole.len() / 2].to_vec(),
        b"\0asm\x01\0\0\0garbage".to_vec(),
    ] {
        let error = runtime
            .prepare(function(bytes, Limits::default()))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidFunction, "{error:?}");
        assert!(
            error.message.contains("invalid WebAssembly module"),
            "{error:?}"
        );
    }
    // A module that imports what isola does not give.
    let imports =
        wat::parse_str(r#"(module (import "env" "open_socket" (func)) (func (export "_start")))"#)
            .unwrap();
    let error = runtime
        .prepare(function(imports, Limits::default()))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::LinkError, "{error:?}");
}

#[tokio::test]
async fn compiled_modules_survive_a_restart_and_a_bad_artifact_is_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let echo = function(module(ECHO), Limits::default());
    let first = WasmRuntime::new()
        .unwrap()
        .with_cache(dir.path().into())
        .unwrap();
    first.prepare(echo.clone()).await.unwrap();
    assert_eq!(first.compiled(), 1);
    let artifacts: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(artifacts.len(), 1);
    // A "restarted node": loads, does not compile.
    let second = WasmRuntime::new()
        .unwrap()
        .with_cache(dir.path().into())
        .unwrap();
    second.prepare(echo.clone()).await.unwrap();
    assert_eq!(second.compiled(), 0);
    let outcome = invoke(&second, echo.clone(), serde_json::json!("again")).await;
    assert!(matches!(outcome.result, Ok(InvocationOutput::Json(ref v)) if v == "again"));
    // A damaged artifact is not trusted: compiled again (and rewritten).
    let path = artifacts[0].as_ref().unwrap().path();
    std::fs::write(&path, b"not an artifact").unwrap();
    let third = WasmRuntime::new()
        .unwrap()
        .with_cache(dir.path().into())
        .unwrap();
    third.prepare(echo).await.unwrap();
    assert_eq!(third.compiled(), 1);
}

/// `core` as a WASI 0.2 command component, through the preview 1 adapter.
fn component(core: &[u8]) -> Vec<u8> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(core)
        .unwrap()
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

#[tokio::test]
async fn a_command_component_runs_like_a_command() {
    let bytes = component(&module(ECHO));
    assert_eq!(RuntimeKind::detect(&bytes), RuntimeKind::WasmComponent);
    let runtime = WasmRuntime::new().unwrap();
    let echo = function(bytes, Limits::default());
    runtime.prepare(echo.clone()).await.unwrap();
    let outcome = invoke(&runtime, echo, serde_json::json!({ "via": "component" })).await;
    match &outcome.result {
        Ok(InvocationOutput::Json(value)) => {
            assert_eq!(value, &serde_json::json!({ "via": "component" }))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.logs.len(), 1, "{:?}", outcome.logs);
    // Limits hold the same way.
    let limits = Limits {
        cpu_ms: 20,
        ..Limits::default()
    };
    let spins = function(
        component(&module(r#"(func (export "_start") (loop $l (br $l)))"#)),
        limits,
    );
    let outcome = invoke(&runtime, spins, serde_json::Value::Null).await;
    assert_eq!(code(&outcome), ErrorCode::CpuLimit, "{:?}", outcome.result);
    let exits = function(
        component(&module(
            r#"(func (export "_start") (call $proc_exit (i32.const 4)))"#,
        )),
        Limits::default(),
    );
    let outcome = invoke(&runtime, exits, serde_json::Value::Null).await;
    assert_eq!(code(&outcome), ErrorCode::UncaughtException);
    // Kept compiled across restarts, as modules are.
    let dir = tempfile::tempdir().unwrap();
    let bytes = component(&module(ECHO));
    let cached = WasmRuntime::new()
        .unwrap()
        .with_cache(dir.path().into())
        .unwrap();
    cached
        .prepare(function(bytes.clone(), Limits::default()))
        .await
        .unwrap();
    assert_eq!(cached.compiled(), 1);
    let restarted = WasmRuntime::new()
        .unwrap()
        .with_cache(dir.path().into())
        .unwrap();
    let echo = function(bytes, Limits::default());
    restarted.prepare(echo.clone()).await.unwrap();
    assert_eq!(restarted.compiled(), 0);
    assert!(invoke(&restarted, echo, serde_json::json!(2))
        .await
        .result
        .is_ok());
    // Garbage that claims to be a component is refused at deploy.
    let error = runtime
        .prepare(function(
            b"\0asm\x0d\0\x01\0garbage".to_vec(),
            Limits::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidFunction, "{error:?}");
}

#[tokio::test]
async fn a_sleeping_command_holds_no_thread_and_ends_at_its_wall_limit() {
    let runtime = Arc::new(WasmRuntime::new().unwrap());
    // A 10 s clock subscription.
    let sleeps = function(
        module(
            r#"(func (export "_start")
              (i64.store (i32.const 24) (i64.const 10000000000))
              (call $proc_exit (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))"#,
        ),
        Limits {
            timeout_ms: 2000,
            ..Limits::default()
        },
    );
    runtime.prepare(sleeps.clone()).await.unwrap();
    let echo = function(module(ECHO), Limits::default());
    runtime.prepare(echo.clone()).await.unwrap();
    let started = std::time::Instant::now();
    // More sleepers than threads (within the function's share of runs:
    // the echo is the same function): none of them holds a thread.
    let sleepers: Vec<_> = (0..6)
        .map(|_| {
            let (runtime, sleeps) = (runtime.clone(), sleeps.clone());
            tokio::spawn(async move { invoke(&runtime, sleeps, serde_json::Value::Null).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let outcome = invoke(&runtime, echo, serde_json::json!(1)).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    // Answered on this one thread while every sleeper still sleeps.
    assert!(sleepers.iter().all(|s| !s.is_finished()));
    for sleeper in sleepers {
        let outcome = sleeper.await.unwrap();
        assert_eq!(
            code(&outcome),
            ErrorCode::WallTimeout,
            "{:?}",
            outcome.result
        );
        // Sleeping costs no CPU.
        assert!(outcome.metrics.cpu_us < 100_000, "{:?}", outcome.metrics);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(2000),
        "{elapsed:?}"
    );
    assert!(elapsed < std::time::Duration::from_secs(6), "{elapsed:?}");
}

#[tokio::test]
async fn a_stderr_flood_keeps_a_thousand_lines() {
    let runtime = WasmRuntime::new().unwrap();
    // 64 KiB of newlines written to stderr 16 times: a million empty lines.
    let floods = function(
        module(
            r#"(func (export "_start") (local $n i32)
              (memory.fill (i32.const 0) (i32.const 10) (i32.const 65536))
              (i32.store (i32.const 0) (i32.const 0))
              (i32.store (i32.const 4) (i32.const 65536))
              (i32.store8 (i32.const 0) (i32.const 10))
              (i32.store (i32.const 0) (i32.const 16))
              (i32.store (i32.const 4) (i32.const 65000))
              (loop $l
                (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $n) (i32.const 16)))))"#,
        ),
        Limits::default(),
    );
    let outcome = invoke(&runtime, floods, serde_json::Value::Null).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(outcome.logs.len(), 1001);
    assert!(outcome.logs[1000].message.contains("dropped"));
}

#[tokio::test]
async fn tables_count_against_the_memory_limit() {
    let runtime = WasmRuntime::new().unwrap();
    let limits = Limits {
        memory_mb: 8,
        ..Limits::default()
    };
    // One memory page plus tables of 90k elements each, grown until refused.
    let tables = function(
        module(
            r#"(table $t 0 funcref)
            (func (export "_start") (local $n i32)
              (loop $l
                (drop (table.grow $t (ref.null func) (i32.const 90000)))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $n) (i32.const 1)))))"#,
        ),
        limits,
    );
    // 90k elements of 16 bytes: 1.4 MiB, within 8 MiB.
    assert!(invoke(&runtime, tables, serde_json::Value::Null)
        .await
        .result
        .is_ok());
    let many = function(
        module(
            r#"(table $a 0 funcref) (table $b 0 funcref) (table $c 0 funcref)
            (table $d 0 funcref) (table $e 0 funcref) (table $f 0 funcref) (table $g 0 funcref)
            (func (export "_start")
              (drop (table.grow $a (ref.null func) (i32.const 90000)))
              (drop (table.grow $b (ref.null func) (i32.const 90000)))
              (drop (table.grow $c (ref.null func) (i32.const 90000)))
              (drop (table.grow $d (ref.null func) (i32.const 90000)))
              (drop (table.grow $e (ref.null func) (i32.const 90000)))
              (drop (table.grow $f (ref.null func) (i32.const 90000)))
              (drop (table.grow $g (ref.null func) (i32.const 90000))))"#,
        ),
        limits,
    );
    let outcome = invoke(&runtime, many, serde_json::Value::Null).await;
    assert_eq!(
        code(&outcome),
        ErrorCode::MemoryLimit,
        "{:?}",
        outcome.result
    );
}

#[path = "command/components.rs"]
mod components;
