//! Tests of the record writer's byte bound.

use super::*;
use crate::testing::Counting;
use isola_core::{LogEntry, LogLevel};
use std::time::Instant;

fn record(id: &str, line_bytes: usize) -> InvocationRecord {
    InvocationRecord {
        id: id.into(),
        function: "f".into(),
        version: 1,
        status: "ok".into(),
        error_code: None,
        error_message: None,
        duration_us: 1,
        cpu_us: 1,
        peak_heap_bytes: 1,
        cold_start: false,
        created_at: 1,
        request: None,
        websocket: None,
        logs: vec![LogEntry {
            level: LogLevel::Info,
            message: "x".repeat(line_bytes),
        }],
    }
}

#[tokio::test]
async fn past_the_byte_cap_records_are_dropped_and_counted() {
    let registry = Arc::new(Counting::new());
    registry.hold_records.store(true, Ordering::SeqCst);
    let size = approximate_size(&record("r00", 10_000));
    let recorder = Recorder::start(registry, 3 * size + size / 2, Counter::default());
    for n in 0..10 {
        recorder.record(record(&format!("r{n:02}"), 10_000));
    }
    // Three fit (the writer holds them while its write hangs); seven do not.
    assert_eq!(recorder.dropped(), 7);
    // A small record still fits in what is left.
    recorder.record(record("small", 10));
    assert_eq!(recorder.dropped(), 7);
}

#[tokio::test]
async fn written_records_free_their_bytes() {
    let registry = Arc::new(Counting::new());
    registry.create_function("f").await.unwrap();
    let size = approximate_size(&record("r00", 10_000));
    let recorder = Recorder::start(registry.clone(), 2 * size, Counter::default());
    for round in 0..5 {
        for n in 0..2 {
            recorder.record(record(&format!("r{round}{n}"), 10_000));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while registry.invocations("f", 100).await.unwrap().len() < 2 * (round + 1) {
            assert!(Instant::now() < deadline, "records not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Bytes are given back after the write.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recorder.dropped(), 0);
}
