//! Pruning invocation records and console lines by age and by count.

use isola_core::{LogEntry, LogLevel};
use isola_store::{InvocationRecord, Registry, Retention, SqliteRegistry};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A record of `function` created at `at` with `lines` console lines.
fn record(function: &str, id: &str, at: i64, lines: usize) -> InvocationRecord {
    InvocationRecord {
        id: id.into(),
        function: function.into(),
        version: 1,
        status: "ok".into(),
        error_code: None,
        error_message: None,
        duration_us: 1,
        cpu_us: 1,
        peak_heap_bytes: 1,
        cold_start: false,
        created_at: at,
        request: None,
        websocket: None,
        logs: (0..lines)
            .map(|n| LogEntry {
                level: LogLevel::Info,
                message: format!("{id} line {n}"),
            })
            .collect(),
    }
}

fn keep_all() -> Retention {
    Retention {
        max_age: Duration::from_secs(1_000 * 3600),
        max_records: 1_000_000,
        max_log_lines: 1_000_000,
    }
}

async fn ids(registry: &SqliteRegistry, function: &str) -> Vec<String> {
    let mut ids: Vec<_> = registry
        .invocations(function, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

async fn log_owners(registry: &SqliteRegistry, function: &str) -> Vec<String> {
    let mut owners: Vec<_> = registry
        .logs(function, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.invocation_id)
        .collect();
    owners.dedup();
    owners
}

#[tokio::test]
async fn pruning_by_age_removes_old_records_and_their_lines() {
    let registry = SqliteRegistry::in_memory().unwrap();
    registry.create_function("f").await.unwrap();
    let now = now_ms();
    registry
        .record_invocations(vec![
            record("f", "a-old", now - 100 * HOUR_MS, 2),
            record("f", "b-old", now - 73 * HOUR_MS, 2),
            record("f", "c-new", now - 71 * HOUR_MS, 2),
            record("f", "d-new", now, 2),
        ])
        .await
        .unwrap();
    let pruned = registry
        .prune(&Retention {
            max_age: Duration::from_secs(72 * 3600),
            ..keep_all()
        })
        .await
        .unwrap();
    assert_eq!((pruned.invocations, pruned.logs), (2, 4));
    assert_eq!(ids(&registry, "f").await, ["c-new", "d-new"]);
    assert_eq!(log_owners(&registry, "f").await, ["c-new", "d-new"]);
    // Nothing more to do on a second pass.
    let again = registry.prune(&keep_all()).await.unwrap();
    assert_eq!((again.invocations, again.logs), (0, 0));
}

#[tokio::test]
async fn pruning_by_count_keeps_the_newest_records_of_all_functions() {
    let registry = SqliteRegistry::in_memory().unwrap();
    registry.create_function("f").await.unwrap();
    registry.create_function("g").await.unwrap();
    let now = now_ms();
    // 5000 records (more than one deletion chunk), alternating functions.
    let records: Vec<_> = (0..5000)
        .map(|n| {
            let function = if n % 2 == 0 { "f" } else { "g" };
            record(function, &format!("r{n:05}"), now - 5000 + n, 1)
        })
        .collect();
    registry.record_invocations(records).await.unwrap();
    let pruned = registry
        .prune(&Retention {
            max_records: 10,
            ..keep_all()
        })
        .await
        .unwrap();
    assert_eq!((pruned.invocations, pruned.logs), (4990, 4990));
    let mut kept = ids(&registry, "f").await;
    kept.extend(ids(&registry, "g").await);
    kept.sort();
    let newest: Vec<_> = (4990..5000).map(|n| format!("r{n:05}")).collect();
    assert_eq!(kept, newest);
    let mut owners = log_owners(&registry, "f").await;
    owners.extend(log_owners(&registry, "g").await);
    owners.sort();
    assert_eq!(owners, newest);
}

#[tokio::test]
async fn pruning_by_line_count_keeps_the_newest_lines() {
    let registry = SqliteRegistry::in_memory().unwrap();
    registry.create_function("f").await.unwrap();
    let now = now_ms();
    registry
        .record_invocations(vec![
            record("f", "a", now - 2, 3),
            record("f", "b", now - 1, 3),
        ])
        .await
        .unwrap();
    let pruned = registry
        .prune(&Retention {
            max_log_lines: 4,
            ..keep_all()
        })
        .await
        .unwrap();
    assert_eq!((pruned.invocations, pruned.logs), (0, 2));
    let lines: Vec<_> = registry
        .logs("f", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(lines, ["a line 2", "b line 0", "b line 1", "b line 2"]);
    assert_eq!(ids(&registry, "f").await, ["a", "b"]);
}
