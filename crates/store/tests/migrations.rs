//! A database written by an earlier version opens and gains what is new.

use isola_store::{InvocationRecord, NodeKey, Registry, SqliteRegistry};

/// The schema before recorded error messages.
const OLD_SCHEMA: &str = include_str!("old_schema.sql");

#[tokio::test]
async fn an_old_database_gains_the_error_message_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isola.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(OLD_SCHEMA).unwrap();
        conn.execute_batch(
            "INSERT INTO functions (id, name, created_at) VALUES (1, 'old', 0);
             INSERT INTO invocations VALUES ('before', 1, 1, 'ok', NULL, 1, 1, 1, 0, 1);",
        )
        .unwrap();
    }
    let key = NodeKey::generate();
    let registry = SqliteRegistry::open(&db, key.clone()).unwrap();
    let record = InvocationRecord {
        id: "after".into(),
        function: "old".into(),
        version: 1,
        status: "error".into(),
        error_code: Some("uncaught_exception".into()),
        error_message: Some("Error: boom\n    at main.js:1:7".into()),
        duration_us: 1,
        cpu_us: 1,
        peak_heap_bytes: 1,
        cold_start: true,
        created_at: 2,
        request: None,
        websocket: None,
        logs: Vec::new(),
    };
    registry
        .record_invocations(vec![record.clone()])
        .await
        .unwrap();
    let records = registry.invocations("old", 10).await.unwrap();
    assert_eq!(records[0], record);
    assert_eq!(records[1].id, "before");
    assert_eq!(records[1].error_message, None);
    drop(registry);
    // Opening again finds the column there and leaves it.
    let registry = SqliteRegistry::open(&db, key).unwrap();
    assert_eq!(registry.invocations("old", 10).await.unwrap().len(), 2);
}
