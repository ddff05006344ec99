//! The embedded KV store: one SQLite table, one transaction per operation.

use crate::{
    validate, Change, Check, Entry, KvError, KvLimits, KvStore, ListPage, Mutation, Result,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// KV in a SQLite file (WAL, fully synced).
#[derive(Clone)]
pub struct SqliteKv {
    pub(crate) conn: Arc<Mutex<Connection>>,
    pub(crate) limits: KvLimits,
}

pub(crate) fn now_ms() -> i64 {
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
    CREATE TABLE IF NOT EXISTS kv_usage (
        namespace TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL;
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

    pub(crate) async fn run<T: Send + 'static>(
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
    quota: u64,
) -> Result<Option<u64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    if !checks_hold(&tx, namespace, checks, now)? {
        return Ok(None);
    }
    let version: u64 = tx
        .query_row(
            "INSERT INTO kv_versions (namespace, version) VALUES (?1, 1)
             ON CONFLICT(namespace) DO UPDATE SET version = version + 1 RETURNING version",
            [namespace],
            |row| row.get::<_, i64>(0),
        )
        .map(|v| v as u64)?;
    let changes: Vec<Change> = mutations
        .iter()
        .map(|m| Change::at(m.clone(), now))
        .collect();
    write(&tx, namespace, version, &changes, Some(quota))?;
    tx.commit()?;
    Ok(Some(version))
}

/// Whether every check holds at `now`.
pub(crate) fn checks_hold(
    tx: &rusqlite::Transaction,
    namespace: &str,
    checks: &[Check],
    now: i64,
) -> Result<bool> {
    for check in checks {
        if current_version(tx, namespace, &check.key, now)? != check.version {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes `changes` at `version`, keeping the namespace's usage; with a
/// `quota`, refuses a commit that leaves the namespace over it.
pub(crate) fn write(
    tx: &rusqlite::Transaction,
    namespace: &str,
    version: u64,
    changes: &[Change],
    quota: Option<u64>,
) -> Result<()> {
    let before = namespace_usage(tx, namespace)?;
    let mut usage = before;
    for change in changes {
        usage -= stored_bytes(tx, namespace, change.key())?;
        match change {
            Change::Put {
                key,
                value,
                expires_at,
            } => {
                usage += (key.len() + value.len()) as i64;
                tx.execute(
                    "INSERT INTO kv (namespace, key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at",
                    params![namespace, key, value, version as i64, expires_at],
                )?;
            }
            Change::Delete { key } => {
                tx.execute(
                    "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
                    params![namespace, key],
                )?;
            }
        }
    }
    // A commit that leaves a namespace over its quota is refused unless it
    // shrinks it: one over (a lowered quota, older data) can delete its way
    // back under.
    if let Some(quota) = quota {
        if usage > quota as i64 && usage > before {
            return Err(KvError::QuotaExceeded(format!(
                "KV quota exceeded: a namespace may hold at most {quota} bytes of keys and values"
            )));
        }
    }
    tx.execute(
        "INSERT INTO kv_usage (namespace, bytes) VALUES (?1, ?2)
         ON CONFLICT(namespace) DO UPDATE SET bytes = excluded.bytes",
        params![namespace, usage],
    )?;
    Ok(())
}

/// Bytes of keys and values a namespace holds (counted once, then kept in
/// `kv_usage` by every commit).
pub(crate) fn namespace_usage(tx: &rusqlite::Transaction, namespace: &str) -> Result<i64> {
    let kept = tx
        .query_row(
            "SELECT bytes FROM kv_usage WHERE namespace = ?1",
            [namespace],
            |row| row.get::<_, i64>(0),
        )
        .optional()?;
    match kept {
        Some(bytes) => Ok(bytes),
        None => Ok(tx.query_row(
            "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM kv WHERE namespace = ?1",
            [namespace],
            |row| row.get::<_, i64>(0),
        )?),
    }
}

/// Bytes a key holds now (0 when absent).
fn stored_bytes(tx: &rusqlite::Transaction, namespace: &str, key: &str) -> Result<i64> {
    Ok(tx
        .query_row(
            "SELECT length(CAST(key AS BLOB)) + length(value) FROM kv WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Deletes up to `limit` expired keys, keeping the namespaces' usage right;
/// returns how many went.
pub(crate) fn purge(conn: &mut Connection, limit: usize) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let freed: Vec<(String, i64)> = {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM kv WHERE (namespace, key) IN (SELECT namespace, key FROM kv WHERE expires_at <= ?1 LIMIT ?2)
             RETURNING namespace, length(CAST(key AS BLOB)) + length(value)",
        )?;
        let rows = stmt.query_map(params![now_ms(), limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (namespace, bytes) in &freed {
        tx.execute(
            "UPDATE kv_usage SET bytes = MAX(0, bytes - ?2) WHERE namespace = ?1",
            params![namespace, bytes],
        )?;
    }
    tx.commit()?;
    Ok(freed.len())
}

impl SqliteKv {
    /// Deletes expired keys, in chunks; returns how many went. The node
    /// calls it periodically, so expired data does not keep its space.
    pub async fn purge_expired(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let purged = self.run(|conn| purge(conn, 1000)).await?;
            total += purged;
            if purged < 1000 {
                return Ok(total);
            }
        }
    }
}

/// The live value of `key`.
fn read_entry(conn: &Connection, namespace: &str, key: &str) -> Result<Option<Entry>> {
    Ok(conn
        .query_row(
            "SELECT value, version FROM kv WHERE namespace = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
            params![namespace, key, now_ms()],
            |row| {
                Ok(Entry {
                    key: key.to_string(),
                    value: row.get(0)?,
                    version: row.get::<_, i64>(1)? as u64,
                })
            },
        )
        .optional()?)
}

/// A page of the live keys starting with `prefix`, after `cursor`.
fn read_page(
    conn: &Connection,
    namespace: &str,
    prefix: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<ListPage> {
    let after = cursor.unwrap_or_default();
    let mut stmt = conn.prepare_cached(
        "SELECT key, version FROM kv WHERE namespace = ?1 AND key > ?2 AND substr(key, 1, length(?3)) = ?3
         AND (expires_at IS NULL OR expires_at > ?4) ORDER BY key LIMIT ?5",
    )?;
    let mut keys = stmt
        .query_map(
            params![namespace, after, prefix, now_ms(), (limit + 1) as i64],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64)),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = keys.len() > limit;
    keys.truncate(limit);
    let cursor = if more {
        keys.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    Ok(ListPage { keys, cursor })
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        crate::check_key(&self.limits, key)?;
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.run(move |conn| read_entry(conn, &namespace, &key))
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
        self.run(move |conn| read_page(conn, &namespace, &prefix, limit, cursor))
            .await
    }

    async fn atomic(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>> {
        validate(&self.limits, &checks, &mutations)?;
        let namespace = namespace.to_string();
        let quota = self.limits.max_namespace_bytes;
        self.run(move |conn| apply(conn, &namespace, &checks, &mutations, quota))
            .await
    }

    fn limits(&self) -> KvLimits {
        self.limits
    }
}
