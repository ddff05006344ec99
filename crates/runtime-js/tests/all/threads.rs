//! Scheduling: waiting invocations free their thread; eviction.

use crate::harness::*;
use isola_core::{Invocation, InvocationInput, Invoker};
use isola_runtime_js::{Executor, ExecutorConfig};
use serde_json::json;
use std::time::{Duration, Instant};

crate::cases!(
    waiting_invocation_frees_its_thread,
    evicted_functions_start_cold,
    many_functions_share_few_threads,
    functions_that_break_limits_do_not_hold_up_others,
    invocations_asked_for_on_a_worker_run_there,
    a_typescript_cold_start_does_not_hold_up_its_thread,
);

fn a_typescript_cold_start_does_not_hold_up_its_thread() {
    let executor = Executor::new(ExecutorConfig {
        workers: 1,
        ..ExecutorConfig::default()
    });
    // A module that takes the compiler a while (under 1 MiB of TypeScript).
    let mut code = String::new();
    for i in 0..18_000 {
        code.push_str(&format!("export const v{i}: number = {i} as number;\n"));
    }
    code.push_str("export default (): string => 'typed';\n");
    let mut typed = (*function("")).clone();
    typed.files[0].path = "main.ts".into();
    typed.files[0].code = code.into();
    typed.entry = "main.ts".into();
    let typed = std::sync::Arc::new(typed);
    let plain = function("export default () => 'plain'");
    let ask = |function: &std::sync::Arc<isola_core::FunctionSource>| Invocation {
        id: "x".into(),
        function: function.clone(),
        input: InvocationInput::Json(json!(null)),
    };
    assert_eq!(json(&block_on(executor.run(ask(&plain)))), json!("plain"));
    block_on(async {
        let started = Instant::now();
        let cold = async {
            let outcome = executor.run(ask(&typed)).await;
            (outcome, started.elapsed())
        };
        let warm = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let outcome = executor.run(ask(&plain)).await;
            (outcome, started.elapsed())
        };
        let ((cold, cold_took), (warm, warm_took)) = tokio::join!(cold, warm);
        assert_eq!(json(&cold), json!("typed"));
        assert_eq!(json(&warm), json!("plain"));
        assert!(
            warm_took < cold_took,
            "the warm call ({warm_took:?}) waited for the TypeScript cold start ({cold_took:?})"
        );
    });
}

fn invocations_asked_for_on_a_worker_run_there() {
    use std::sync::atomic::Ordering;
    let executor = std::sync::Arc::new(Executor::new(ExecutorConfig {
        workers: 2,
        ..ExecutorConfig::default()
    }));
    let source = function("export default () => 'here'");
    let ask = |id: &str| Invocation {
        id: id.into(),
        function: source.clone(),
        input: InvocationInput::Json(json!(null)),
    };
    // From a thread of its own, an invocation goes through the queues.
    assert_eq!(json(&block_on(executor.run(ask("outside")))), json!("here"));
    assert_eq!(executor.stats().in_place.load(Ordering::Relaxed), 0);

    // From a task on each worker, it runs where it was asked for.
    let (answers, answered) = std::sync::mpsc::channel();
    let on_workers = executor.clone();
    let invocation = ask("inside");
    let served = executor.serve_on_workers(move |_| {
        let (executor, answers, invocation) =
            (on_workers.clone(), answers.clone(), invocation.clone());
        async move {
            let outcome = executor.run(invocation).await;
            answers.send(json(&outcome)).unwrap();
        }
    });
    block_on(served);
    let answers: Vec<_> = answered.try_iter().collect();
    assert_eq!(answers, vec![json!("here"), json!("here")]);
    assert_eq!(executor.stats().in_place.load(Ordering::Relaxed), 2);

    // Many asked for at once on one worker: of a function whose cost is
    // not known there yet, two wait there and the rest go to whichever
    // worker is free; of one known to be cheap, all of them wait there.
    let burst = function("export default () => 'burst'");
    let burst_of = move |executor: std::sync::Arc<Executor>| {
        let burst = burst.clone();
        executor.clone().serve_on_workers(move |worker| {
            let (executor, burst) = (executor.clone(), burst.clone());
            async move {
                if worker == 0 {
                    let runs = (0..8).map(|_| {
                        executor.run(Invocation {
                            id: "burst".into(),
                            function: burst.clone(),
                            input: InvocationInput::Json(json!(null)),
                        })
                    });
                    let outcomes = futures::future::join_all(runs).await;
                    assert!(outcomes.iter().all(|o| json(o) == json!("burst")));
                }
            }
        })
    };
    block_on(burst_of(executor.clone()));
    assert_eq!(executor.stats().in_place.load(Ordering::Relaxed), 2 + 2);
    block_on(burst_of(executor.clone()));
    assert_eq!(executor.stats().in_place.load(Ordering::Relaxed), 4 + 8);
}

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

fn functions_that_break_limits_do_not_hold_up_others() {
    let executor = isola_runtime_js::Executor::new(isola_runtime_js::ExecutorConfig {
        workers: 1,
        ..Default::default()
    });
    let limits = isola_core::Limits {
        cpu_ms: 400,
        ..isola_core::Limits::default()
    };
    let spinner = function_with("export default () => { for (;;) {} }", limits);
    let hello = function("export default () => 'hello'");
    assert_eq!(
        json(&invoke_on(&executor, &hello, serde_json::json!(null))),
        serde_json::json!("hello")
    );
    // The first time, it breaks its limit on the only worker...
    let outcome = invoke_on(&executor, &spinner, serde_json::json!(null));
    assert_eq!(error(&outcome).code, isola_core::ErrorCode::CpuLimit);
    // ...from then on it runs in quarantine, beside the worker.
    let slowest = block_on(async {
        let spin = executor.run(isola_core::Invocation {
            id: "spin".into(),
            function: spinner.clone(),
            input: isola_core::InvocationInput::Json(serde_json::json!(null)),
        });
        let hellos = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut slowest = std::time::Duration::ZERO;
            for _ in 0..10 {
                let started = std::time::Instant::now();
                let outcome = executor
                    .run(isola_core::Invocation {
                        id: "hello".into(),
                        function: hello.clone(),
                        input: isola_core::InvocationInput::Json(serde_json::json!(null)),
                    })
                    .await;
                assert!(outcome.result.is_ok(), "{:?}", outcome.result);
                slowest = slowest.max(started.elapsed());
            }
            slowest
        };
        let (spun, slowest) = tokio::join!(spin, hellos);
        assert_eq!(error(&spun).code, isola_core::ErrorCode::CpuLimit);
        slowest
    });
    assert!(
        slowest < std::time::Duration::from_millis(200),
        "a call waited {slowest:?} behind a function in quarantine"
    );
    executor.shutdown();
}
