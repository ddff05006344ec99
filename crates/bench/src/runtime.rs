//! Benchmarks of the runtime in process, through `Executor`.

use crate::stats::Samples;
use clap::Args;
use futures::StreamExt;
use isola_core::{FunctionSource, Invocation, InvocationInput, InvocationOutput};
use isola_runtime_js::{Executor, ExecutorConfig};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HELLO: &str = "export default async (payload) => ({ hello: payload.name })";

fn hello(id: String, code: &str) -> Arc<FunctionSource> {
    Arc::new(FunctionSource::single_module(id, "hello", code))
}

async fn call(executor: &Executor, function: &Arc<FunctionSource>) -> isola_core::Outcome {
    let outcome = executor
        .run(Invocation {
            id: "bench".into(),
            function: function.clone(),
            input: InvocationInput::Json(json!({ "name": "world" })),
        })
        .await;
    match &outcome.result {
        Ok(InvocationOutput::Json(value)) if value["hello"] == "world" => outcome,
        other => panic!("unexpected result: {other:?}"),
    }
}

/// Arguments of `cold`.
#[derive(Debug, Args)]
pub struct ColdArgs {
    /// Cold starts to measure.
    #[arg(long, default_value_t = 300)]
    n: usize,
}

/// Cold starts, with the module's code cache warm (a deployment starting on
/// a node that ran it before) and cold (code never seen).
pub async fn cold(args: ColdArgs) -> anyhow::Result<()> {
    let executor = Executor::new(ExecutorConfig {
        workers: 1,
        max_warm_isolates: 0,
        ..Default::default()
    });
    // Warm up V8 and the code cache for HELLO.
    call(&executor, &hello("warmup".into(), HELLO)).await;
    let mut cached = Samples::default();
    let mut uncached = Samples::default();
    for i in 0..args.n {
        let outcome = call(&executor, &hello(format!("cold-{i}"), HELLO)).await;
        assert!(outcome.metrics.cold_start);
        cached.push(Duration::from_micros(outcome.metrics.duration_us));
        let unique = format!("{HELLO}; // variant {i}");
        let outcome = call(&executor, &hello(format!("unique-{i}"), &unique)).await;
        uncached.push(Duration::from_micros(outcome.metrics.duration_us));
    }
    println!(
        "{}",
        json!({ "bench": "cold_start", "code_cache_hit": cached.summary_us(), "code_cache_miss": uncached.summary_us() })
    );
    Ok(())
}

/// Arguments of `warm`.
#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Sequential invocations for the latency figures.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Invocations in flight during the throughput run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Warm latency on one worker, then throughput on every core.
pub async fn warm(args: WarmArgs) -> anyhow::Result<()> {
    let function = hello("warm".into(), HELLO);
    let executor = Executor::new(ExecutorConfig {
        workers: 1,
        ..Default::default()
    });
    call(&executor, &function).await;
    let mut latency = Samples::default();
    let mut inside = Samples::default();
    for _ in 0..args.n {
        let started = Instant::now();
        let outcome = call(&executor, &function).await;
        latency.push(started.elapsed());
        inside.push(Duration::from_micros(outcome.metrics.duration_us));
        assert!(!outcome.metrics.cold_start);
    }
    drop(executor);

    let executor = Executor::new(ExecutorConfig::default());
    let workers = ExecutorConfig::default().workers;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let done = futures::stream::iter(0..usize::MAX)
        .take_while(|_| futures::future::ready(Instant::now() < deadline))
        .map(|_| call(&executor, &function))
        .buffer_unordered(args.concurrency)
        .count()
        .await;
    let rate = done as f64 / started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "bench": "warm_invocation", "one_worker_latency": latency.summary_us(), "inside_worker": inside.summary_us(), "throughput": { "workers": workers, "concurrency": args.concurrency, "invocations": done, "per_second": rate.round() } })
    );
    Ok(())
}

/// Arguments of `memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Warm isolates to hold.
    #[arg(long, default_value_t = 1000)]
    isolates: usize,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory per warm idle isolate, each holding its own function.
pub async fn memory(args: MemoryArgs) -> anyhow::Result<()> {
    let executor = Executor::new(ExecutorConfig {
        max_warm_isolates: args.isolates + 16,
        max_warm_memory_mb: 64 * 1024,
        ..Default::default()
    });
    for i in 0..8 {
        call(&executor, &hello(format!("baseline-{i}"), HELLO)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let started = Instant::now();
    let mut cold = Samples::default();
    for i in 0..args.isolates {
        let outcome = call(&executor, &hello(format!("mem-{i}"), HELLO)).await;
        cold.push(Duration::from_micros(outcome.metrics.duration_us));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let stats = executor.stats();
    let warm = stats.warm_isolates.load(Ordering::Relaxed);
    let heap = stats.warm_memory.load(Ordering::Relaxed);
    let per_isolate = (after.saturating_sub(before)) as f64 / args.isolates as f64;
    println!(
        "{}",
        json!({
            "bench": "memory",
            "isolates": args.isolates,
            "warm_isolates": warm,
            "rss_before_mib": before / (1 << 20),
            "rss_after_mib": after / (1 << 20),
            "rss_per_isolate_mib": (per_isolate / (1 << 20) as f64 * 100.0).round() / 100.0,
            "v8_heap_per_isolate_mib": ((heap as f64 / warm.max(1) as f64) / (1 << 20) as f64 * 100.0).round() / 100.0,
            "seconds_to_create": started.elapsed().as_secs_f64(),
            "cold_start_while_filling": cold.summary_us(),
        })
    );
    Ok(())
}
