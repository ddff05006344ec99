//! Scheduling: waiting invocations free their thread; eviction.

use crate::harness::*;
use isola_core::{Invocation, InvocationInput, Invoker};
use isola_runtime_js::{Executor, ExecutorConfig};
use serde_json::json;
use std::time::{Duration, Instant};

crate::cases!(
    waiting_invocation_frees_its_thread,
    evicted_functions_start_cold,
    many_functions_share_few_threads
);

fn waiting_invocation_frees_its_thread() {
    let executor = Executor::new(ExecutorConfig {
        workers: 1,
        ..ExecutorConfig::default()
    });
    let slow = function(
        "export default async () => { await new Promise(r => setTimeout(r, 500)); return 'slow' }",
    );
    let fast = function("export default () => 'fast'");
    block_on(async {
        let started = Instant::now();
        let slow_run = executor.run(Invocation {
            id: "s".into(),
            function: slow.clone(),
            input: InvocationInput::Json(json!(null)),
        });
        let fast_run = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let outcome = executor
                .run(Invocation {
                    id: "f".into(),
                    function: fast.clone(),
                    input: InvocationInput::Json(json!(null)),
                })
                .await;
            (outcome, started.elapsed())
        };
        let (slow_outcome, (fast_outcome, fast_done)) = tokio::join!(slow_run, fast_run);
        assert_eq!(json(&slow_outcome), json!("slow"));
        assert_eq!(json(&fast_outcome), json!("fast"));
        assert!(
            fast_done < Duration::from_millis(450),
            "fast invocation waited for the slow one: {fast_done:?}"
        );
    });
}

fn evicted_functions_start_cold() {
    let executor = Executor::new(ExecutorConfig {
        workers: 1,
        ..ExecutorConfig::default()
    });
    let source = function("export default () => 1");
    assert!(
        invoke_on(&executor, &source, json!(null))
            .metrics
            .cold_start
    );
    assert!(
        !invoke_on(&executor, &source, json!(null))
            .metrics
            .cold_start
    );
    executor.evict(&source.id);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        invoke_on(&executor, &source, json!(null))
            .metrics
            .cold_start
    );
}

fn many_functions_share_few_threads() {
    let executor = Executor::new(ExecutorConfig {
        workers: 2,
        max_warm_isolates: 8,
        ..ExecutorConfig::default()
    });
    let sources: Vec<_> = (0..20)
        .map(|i| function(&format!("export default () => {i}")))
        .collect();
    block_on(async {
        let runs = sources.iter().map(|s| {
            executor.run(Invocation {
                id: "m".into(),
                function: s.clone(),
                input: InvocationInput::Json(json!(null)),
            })
        });
        let outcomes = futures::future::join_all(runs).await;
        for (i, outcome) in outcomes.iter().enumerate() {
            assert_eq!(json(outcome), json!(i));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let warm = executor
        .stats()
        .warm_isolates
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(warm <= 8, "pool bound exceeded: {warm}");
}
