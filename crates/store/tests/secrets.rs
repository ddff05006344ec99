//! Secrets at rest: sealed with the node key, never in the database files
//! as plaintext (also after migrating a database from before sealing), and
//! a database opened with the wrong key refuses cleanly and loses nothing.

use isola_core::{Limits, SourceFile};
use isola_store::{
    database_is_sealed, NewDeployment, NodeKey, Registry, SqliteRegistry, StoreError,
};
use std::collections::BTreeMap;
use std::path::Path;

const SECRET: &str = "sekrit-value-123";

/// The schema before sealed secrets.
const OLD_SCHEMA: &str = include_str!("old_schema.sql");

fn deployment() -> NewDeployment {
    NewDeployment {
        files: vec![SourceFile {
            path: "main.js".into(),
            code: "export default () => 1".into(),
        }],
        entry: "main.js".into(),
        limits: Limits::default(),
        env: BTreeMap::new(),
        secrets: BTreeMap::from([("API_KEY".to_string(), SECRET.to_string())]),
        kv_binding: None,
        allowed_hosts: Vec::new(),
    }
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|p| p.display().to_string())
        .collect()
}

async fn secret_of(registry: &SqliteRegistry, name: &str) -> String {
    let (_, source) = registry.active_source(name).await.unwrap().unwrap();
    source.env["API_KEY"].clone()
}

#[tokio::test]
async fn deployed_secrets_are_sealed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::create(&dir.path().join("node.key")).unwrap();
    let db = dir.path().join("isola.db");
    let registry = SqliteRegistry::open(&db, key).unwrap();
    registry.create_function("f").await.unwrap();
    registry
        .create_deployment("f", deployment(), true)
        .await
        .unwrap();
    assert_eq!(secret_of(&registry, "f").await, SECRET);
    assert!(dir.path().join("isola.db-wal").exists());
    assert_eq!(files_containing(dir.path(), SECRET), Vec::<String>::new());
    assert!(database_is_sealed(&db).unwrap());
}

/// A database as the previous version left it: plaintext secrets.
fn write_old_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(OLD_SCHEMA).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO functions (id, name, created_at, active_version, next_version) VALUES (1, 'old', 0, 1, 2);
         INSERT INTO deployments (function_id, version, hash, entry, files, limits, env, secrets, created_at)
         VALUES (1, 1, '{hash}', 'main.js', '[{{\"path\":\"main.js\",\"code\":\"export default () => 1\"}}]',
                 '{limits}', '{{}}', '{{\"API_KEY\":\"{SECRET}\"}}', 0);",
        hash = "ab".repeat(32),
        limits = serde_json::to_string(&Limits::default()).unwrap(),
    ))
    .unwrap();
}

#[tokio::test]
async fn an_old_database_is_sealed_and_scrubbed_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isola.db");
    write_old_database(&db);
    assert!(!files_containing(dir.path(), SECRET).is_empty());
    assert!(!database_is_sealed(&db).unwrap());

    let key = NodeKey::create(&dir.path().join("node.key")).unwrap();
    let registry = SqliteRegistry::open(&db, key).unwrap();
    assert_eq!(files_containing(dir.path(), SECRET), Vec::<String>::new());
    assert_eq!(secret_of(&registry, "old").await, SECRET);
    // Its hash is the keyed one now.
    let (info, _) = registry.active_source("old").await.unwrap().unwrap();
    assert_eq!(info.hash, registry.deployment_hash(&deployment()));
}

#[tokio::test]
async fn another_key_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("isola.db");
    let key_file = dir.path().join("node.key");
    {
        let registry = SqliteRegistry::open(&db, NodeKey::create(&key_file).unwrap()).unwrap();
        registry.create_function("f").await.unwrap();
        registry
            .create_deployment("f", deployment(), true)
            .await
            .unwrap();
    }
    let refused = SqliteRegistry::open(&db, NodeKey::generate())
        .err()
        .unwrap();
    assert!(matches!(refused, StoreError::Key(_)), "{refused}");
    assert!(
        refused.to_string().contains("another node key"),
        "{refused}"
    );
    let registry = SqliteRegistry::open(&db, NodeKey::load(&key_file).unwrap()).unwrap();
    assert_eq!(secret_of(&registry, "f").await, SECRET);
}

#[tokio::test]
async fn the_deployment_hash_cannot_confirm_a_guessed_secret() {
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::create(&dir.path().join("node.key")).unwrap();
    let registry = SqliteRegistry::open(&dir.path().join("isola.db"), key).unwrap();
    registry.create_function("f").await.unwrap();
    let stored = registry
        .create_deployment("f", deployment(), true)
        .await
        .unwrap()
        .hash;
    // What someone holding the database (or the API's answer) could compute
    // for a right guess, without the node key.
    let guessed = deployment().content_hash(|_, value| value.to_string());
    assert_ne!(stored, guessed);
    assert_eq!(stored, registry.deployment_hash(&deployment()));
    // Another secret value is another deployment.
    let mut other = deployment();
    other.secrets.insert("API_KEY".into(), "another".into());
    assert_ne!(stored, registry.deployment_hash(&other));
}
