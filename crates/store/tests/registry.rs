//! The SQLite registry against a real database file.

use isola_core::{Limits, LogEntry, LogLevel, SourceFile};
use isola_store::{InvocationRecord, NewDeployment, NodeKey, Registry, SqliteRegistry, StoreError};
use std::collections::BTreeMap;

fn deployment(code: &str) -> NewDeployment {
    NewDeployment {
        files: vec![SourceFile {
            path: "main.js".into(),
            code: code.into(),
        }],
        entry: "main.js".into(),
        limits: Limits::default(),
        env: BTreeMap::from([("MODE".to_string(), "test".to_string())]),
        secrets: BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]),
        kv_binding: Some("KV".into()),
        allowed_hosts: vec!["10.0.0.5".into()],
    }
}

fn open(dir: &tempfile::TempDir) -> SqliteRegistry {
    let key_file = dir.path().join("node.key");
    let key = if key_file.exists() {
        NodeKey::load(&key_file).unwrap()
    } else {
        NodeKey::create(&key_file).unwrap()
    };
    SqliteRegistry::open(&dir.path().join("isola.db"), key).unwrap()
}

#[tokio::test]
async fn functions_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(&dir);
    registry.create_function("beta").await.unwrap();
    registry.create_function("alpha").await.unwrap();
    let names: Vec<_> = registry
        .functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(matches!(
        registry.create_function("alpha").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        registry.create_function("Bad Name").await,
        Err(StoreError::Invalid(_))
    ));
    registry.delete_function("alpha").await.unwrap();
    assert!(matches!(
        registry.function("alpha").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        registry.delete_function("alpha").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn deployments_are_versioned_activated_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(&dir);
    registry.create_function("hello").await.unwrap();
    assert!(registry.active_source("hello").await.unwrap().is_none());
    let v1 = registry
        .create_deployment("hello", deployment("export default () => 1"), true)
        .await
        .unwrap();
    let v2 = registry
        .create_deployment("hello", deployment("export default () => 2"), true)
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_ne!(v1.hash, v2.hash);
    let (active, source) = registry.active_source("hello").await.unwrap().unwrap();
    assert_eq!(active.version, 2);
    assert_eq!(source.file("main.js"), Some("export default () => 2"));
    assert_eq!(source.env.get("TOKEN").map(String::as_str), Some("s3cret"));
    assert_eq!(source.env.get("MODE").map(String::as_str), Some("test"));

    let rolled_back = registry.activate("hello", 1).await.unwrap();
    assert!(rolled_back.active);
    let (active, _) = registry.active_source("hello").await.unwrap().unwrap();
    assert_eq!(active.version, 1);
    assert!(matches!(
        registry.activate("hello", 9).await,
        Err(StoreError::NotFound(_))
    ));

    let listed = registry.deployments("hello").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|d| (d.version, d.active))
            .collect::<Vec<_>>(),
        [(2, false), (1, true)]
    );
    // Secrets are write-only: names, never values.
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("s3cret"));
    assert_eq!(listed[0].secret_names, ["TOKEN"]);
}

#[tokio::test]
async fn a_deployment_stored_without_activation_is_not_active() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(&dir);
    registry.create_function("f").await.unwrap();
    registry
        .create_deployment("f", deployment("export default () => 1"), false)
        .await
        .unwrap();
    assert!(registry.active_source("f").await.unwrap().is_none());
    assert!(matches!(
        registry
            .create_deployment("nope", deployment("x"), true)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        registry
            .create_deployment("f", deployment("  "), true)
            .await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn concurrent_deploys_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(&dir);
    registry.create_function("busy").await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move {
                registry
                    .create_deployment(
                        "busy",
                        deployment(&format!("export default () => {i}")),
                        true,
                    )
                    .await
                    .unwrap()
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=16).collect::<Vec<_>>());
}

#[tokio::test]
async fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = open(&dir);
        registry.create_function("kept").await.unwrap();
        registry
            .create_deployment("kept", deployment("export default () => 'kept'"), true)
            .await
            .unwrap();
        registry.set_setting("token_hash", "abc").await.unwrap();
    }
    let registry = open(&dir);
    let (active, source) = registry.active_source("kept").await.unwrap().unwrap();
    assert_eq!(active.version, 1);
    assert_eq!(source.file("main.js"), Some("export default () => 'kept'"));
    assert_eq!(
        registry.setting("token_hash").await.unwrap().as_deref(),
        Some("abc")
    );
}

#[tokio::test]
async fn invocations_and_logs_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(&dir);
    registry.create_function("logged").await.unwrap();
    let record = |id: &str, at: i64| InvocationRecord {
        id: id.into(),
        function: "logged".into(),
        version: 1,
        status: "ok".into(),
        error_code: None,
        error_message: None,
        duration_us: 120,
        cpu_us: 80,
        peak_heap_bytes: 1 << 20,
        cold_start: false,
        created_at: at,
        request: None,
        websocket: None,
        logs: vec![LogEntry {
            level: LogLevel::Warn,
            message: format!("line from {id}"),
        }],
    };
    let mut ghost = record("ghost", 3);
    ghost.function = "deleted-function".into();
    registry
        .record_invocations(vec![record("a", 1), record("b", 2), ghost])
        .await
        .unwrap();
    let records = registry.invocations("logged", 10).await.unwrap();
    assert_eq!(
        records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    let logs = registry.logs("logged", 0, 10).await.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["line from a", "line from b"]
    );
    assert_eq!(logs[0].level, "warn");
    let later = registry.logs("logged", logs[0].seq, 10).await.unwrap();
    assert_eq!(later.len(), 1);
}

#[tokio::test]
async fn watchers_see_every_change_of_what_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(&dir);
    let mut changes = registry.watch();
    registry.create_function("watched").await.unwrap();
    // Stored but not activated: nothing served changed.
    registry
        .create_deployment("watched", deployment("export default () => 1"), false)
        .await
        .unwrap();
    registry
        .create_deployment("watched", deployment("export default () => 2"), true)
        .await
        .unwrap();
    registry.activate("watched", 1).await.unwrap();
    registry.delete_function("watched").await.unwrap();
    // A failed write tells nobody.
    assert!(registry.activate("watched", 1).await.is_err());
    let mut seen = Vec::new();
    while let Ok(changed) = changes.try_recv() {
        assert_eq!(changed.function, "watched");
        seen.push(changed);
    }
    // Created, deployed and activated, rolled back, deleted.
    assert_eq!(seen.len(), 4, "{seen:?}");
}
