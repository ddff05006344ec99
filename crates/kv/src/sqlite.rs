//! The embedded KV store: one SQLite table, one transaction per operation.

use crate::{check_key, check_value, Check, Entry, KvLimits, KvStore, ListPage, Mutation, Result};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// KV in a SQLite file (WAL, fully synced).
#[derive(Clone)]
pub struct SqliteKv {
    conn: Arc<Mutex<Connection>>,
    limits: KvLimits,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS kv_versions (
        namespace TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    );
";

impl SqliteKv {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, limits: KvLimits) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            limits,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| crate::KvError::Storage(e.to_string()))?
    }
}

fn current_version(
    conn: &Connection,
    namespace: &str,
    key: &str,
    now: i64,
) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT version FROM kv WHERE namespace = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
        params![namespace, key, now],
        |row| row.get::<_, i64>(0).map(|v| v as u64),
    )
    .optional()
}

fn apply(
    conn: &mut Connection,
    namespace: &str,
    checks: &[Check],
    mutations: &[Mutation],
) -> Result<Option<u64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    for check in checks {
        if current_version(&tx, namespace, &check.key, now)? != check.version {
            return Ok(None);
        }
    }
    let version: u64 = tx
        .query_row(
            "INSERT INTO kv_versions (namespace, version) VALUES (?1, 1)
             ON CONFLICT(namespace) DO UPDATE SET version = version + 1 RETURNING version",
            [namespace],
            |row| row.get::<_, i64>(0),
        )
        .map(|v| v as u64)?;
    for mutation in mutations {
        match mutation {
            Mutation::Put {
                key,
                value,
                ttl_seconds,
            } => {
                let expires = ttl_seconds.map(|s| now + (s as i64).saturating_mul(1000));
                tx.execute(
                    "INSERT INTO kv (namespace, key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at",
                    params![namespace, key, value, version as i64, expires],
                )?;
            }
            Mutation::Delete { key } => {
                tx.execute(
                    "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
                    params![namespace, key],
                )?;
            }
        }
    }
    tx.commit()?;
    Ok(Some(version))
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        check_key(&self.limits, key)?;
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value, version FROM kv WHERE namespace = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                    params![namespace, key, now_ms()],
                    |row| Ok(Entry { key: key.clone(), value: row.get(0)?, version: row.get::<_, i64>(1)? as u64 }),
                )
                .optional()?)
        })
        .await
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<ListPage> {
        let limit = limit.clamp(1, self.limits.max_list);
        let (namespace, prefix) = (namespace.to_string(), prefix.to_string());
        self.run(move |conn| {
            let after = cursor.unwrap_or_default();
            let mut stmt = conn.prepare(
                "SELECT key, version FROM kv WHERE namespace = ?1 AND key > ?2 AND substr(key, 1, length(?3)) = ?3
                 AND (expires_at IS NULL OR expires_at > ?4) ORDER BY key LIMIT ?5",
            )?;
            let mut keys = stmt
                .query_map(params![namespace, after, prefix, now_ms(), (limit + 1) as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = keys.len() > limit;
            keys.truncate(limit);
            let cursor = if more { keys.last().map(|(k, _)| k.clone()) } else { None };
            Ok(ListPage { keys, cursor })
        })
        .await
    }

    async fn atomic(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>> {
        for check in &checks {
            check_key(&self.limits, &check.key)?;
        }
        for mutation in &mutations {
            match mutation {
                Mutation::Put { key, value, .. } => {
                    check_key(&self.limits, key)?;
                    check_value(&self.limits, value)?;
                }
                Mutation::Delete { key } => check_key(&self.limits, key)?,
            }
        }
        let namespace = namespace.to_string();
        self.run(move |conn| apply(conn, &namespace, &checks, &mutations))
            .await
    }

    fn limits(&self) -> KvLimits {
        self.limits
    }
}
