//! `isola-bench wasm`: a WebAssembly function invoked in-process through
//! the runtime (a fresh instance per invocation, on a blocking thread), and
//! the same compute kernel (a checksum loop) as Wasm and as JavaScript.

use crate::stats::Samples;
use isola_core::{
    FunctionSource, Invocation, InvocationInput, InvocationOutput, Invoker, Limits, Outcome,
    RuntimeKind,
};
use isola_runtime_js::{Executor, ExecutorConfig};
use isola_runtime_wasm::WasmRuntime;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// Options of `wasm`.
#[derive(Debug, clap::Args)]
pub struct WasmArgs {
    /// Invocations measured, one after the other.
    #[arg(long, default_value_t = 5000)]
    n: usize,
}

/// A command that does nothing.
const NOTHING: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// A command summing `i * 31 ^ i` over 10 million steps, then exiting.
const KERNEL: &str = r#"(module (memory (export "memory") 1)
  (global $sink (mut i32) (i32.const 0))
  (func (export "_start") (local $i i32) (local $sum i32)
    (loop $l
      (local.set $sum (i32.add (local.get $sum) (i32.xor (i32.mul (local.get $i) (i32.const 31)) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 10000000))))
    (global.set $sink (local.get $sum))))"#;

/// The same kernel in JavaScript.
const KERNEL_JS: &str = "export default () => { let sum = 0; for (let i = 0; i < 10000000; i++) sum = (sum + ((Math.imul(i, 31) ^ i) | 0)) | 0; return sum; }";

fn wasm_function(id: &str, text: &str) -> anyhow::Result<Arc<FunctionSource>> {
    let bytes = wat::parse_str(text)?;
    let mut source = FunctionSource::single_module(id, id, "");
    source.runtime = RuntimeKind::detect(&bytes);
    source.entry = "main.wasm".into();
    source.files[0].path = "main.wasm".into();
    source.files[0].code = bytes;
    source.limits = Limits {
        cpu_ms: 5000,
        ..Limits::default()
    };
    Ok(Arc::new(source))
}

async fn call(invoker: &dyn Invoker, function: &Arc<FunctionSource>) -> Outcome {
    invoker
        .invoke(Invocation {
            id: "bench".into(),
            function: function.clone(),
            input: InvocationInput::Json(serde_json::Value::Null),
        })
        .await
}

/// Runs `wasm`.
pub async fn wasm(args: WasmArgs) -> anyhow::Result<()> {
    let runtime = WasmRuntime::new()?;
    let nothing = wasm_function("nothing", NOTHING)?;
    runtime.prepare(nothing.clone()).await?;
    let mut latency = Samples::default();
    for _ in 0..args.n {
        let started = Instant::now();
        let outcome = call(&runtime, &nothing).await;
        latency.push(started.elapsed());
        anyhow::ensure!(outcome.result.is_ok(), "{:?}", outcome.result);
    }
    let kernel = wasm_function("kernel", KERNEL)?;
    let started = Instant::now();
    let outcome = call(&runtime, &kernel).await;
    let wasm_kernel = started.elapsed();
    anyhow::ensure!(outcome.result.is_ok(), "{:?}", outcome.result);
    let executor = Executor::new(ExecutorConfig {
        workers: 1,
        ..Default::default()
    });
    let mut js = FunctionSource::single_module("kernel-js", "kernel-js", KERNEL_JS);
    js.limits = Limits {
        cpu_ms: 5000,
        ..Limits::default()
    };
    let js = Arc::new(js);
    call(&executor, &js).await;
    let started = Instant::now();
    let outcome = call(&executor, &js).await;
    let js_kernel = started.elapsed();
    anyhow::ensure!(
        matches!(outcome.result, Ok(InvocationOutput::Json(_))),
        "{:?}",
        outcome.result
    );
    println!(
        "{}",
        json!({
            "bench": "wasm",
            "instantiate_and_invoke": latency.summary_us(),
            "checksum_10m": { "wasm_ms": wasm_kernel.as_secs_f64() * 1000.0, "js_ms": js_kernel.as_secs_f64() * 1000.0 },
        })
    );
    Ok(())
}

/// Where the hello component goes, and what it answers.
#[derive(Debug, clap::Args)]
pub struct HelloArgs {
    /// The file to write.
    #[arg(long)]
    out: std::path::PathBuf,
    /// The response body.
    #[arg(long, default_value = "hello world")]
    text: String,
}

/// Writes a `wasi:http` component answering 200 with the text.
pub fn hello(args: HelloArgs) -> anyhow::Result<()> {
    std::fs::write(&args.out, isola_runtime_wasm::fixtures::hello(&args.text))?;
    Ok(())
}
