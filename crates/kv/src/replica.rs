//! A node's copy of namespaces whose commits are ordered elsewhere.
//!
//! In a cluster, a namespace's commits are messages in a log that every
//! node reads in the same order; the log's sequence numbers are the
//! versions. A [`Replica`] keeps, in SQLite, each namespace as of the last
//! commit it applied ([`Position`]), says whether a commit would be
//! accepted before it is sent ([`Replica::admits`]), and applies commits
//! as the log orders them ([`Replica::apply`]). It is a [`SqliteKv`]
//! with a table of positions, so reads are the embedded store's.

use crate::sqlite::{checks_hold, now_ms, write};
use crate::{Change, Check, Entry, KvLimits, KvStore, ListPage, Result, SqliteKv};
use rusqlite::{params, TransactionBehavior};
use std::path::Path;

/// How far a namespace's copy has read its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The log's sequence of the last commit applied (0: none).
    pub seq: u64,
    /// The namespace's version after it: its count of commits, as the
    /// log's messages number them (what functions see).
    pub version: u64,
    /// Bytes of commits applied since the copy was last restored from a
    /// snapshot (or since [`Replica::restart_log`]): how much log a
    /// snapshot would replace.
    pub log_bytes: u64,
    /// Bytes of keys and values the namespace holds.
    pub bytes: u64,
}

/// A key as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The key, its value and version.
    pub entry: Entry,
    /// When it expires (milliseconds since the Unix epoch).
    pub expires_at: Option<i64>,
}

/// Copies of namespaces, in a SQLite file.
#[derive(Clone)]
pub struct Replica {
    kv: SqliteKv,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv_applied (
        namespace TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        version INTEGER NOT NULL,
        log_bytes INTEGER NOT NULL
    );
";

impl Replica {
    /// Opens (creating if needed) the copies at `path`.
    pub fn open(path: &Path, limits: KvLimits) -> Result<Self> {
        let kv = SqliteKv::open(path, limits)?;
        {
            let conn = kv.conn.lock().unwrap_or_else(|p| p.into_inner());
            // A cache of the log, rebuilt from it: no need to reach the
            // disk at each commit.
            conn.pragma_update(None, "synchronous", "OFF")?;
            conn.execute_batch(SCHEMA)?;
        }
        Ok(Self { kv })
    }

    /// The limits commits are checked against.
    pub fn limits(&self) -> KvLimits {
        self.kv.limits
    }

    /// How far `namespace` has been applied.
    pub async fn position(&self, namespace: &str) -> Result<Position> {
        let namespace = namespace.to_string();
        self.kv
            .run(move |conn| {
                Ok(conn.query_row(
                    "SELECT COALESCE((SELECT seq FROM kv_applied WHERE namespace = ?1), 0),
                            COALESCE((SELECT version FROM kv_applied WHERE namespace = ?1), 0),
                            COALESCE((SELECT log_bytes FROM kv_applied WHERE namespace = ?1), 0),
                            COALESCE((SELECT bytes FROM kv_usage WHERE namespace = ?1), 0)",
                    [&namespace],
                    |row| {
                        Ok(Position {
                            seq: row.get::<_, i64>(0)? as u64,
                            version: row.get::<_, i64>(1)? as u64,
                            log_bytes: row.get::<_, i64>(2)? as u64,
                            bytes: row.get::<_, i64>(3)?.max(0) as u64,
                        })
                    },
                )?)
            })
            .await
    }

    /// Counts `namespace`'s log bytes from zero again (it was just
    /// snapshotted).
    pub async fn restart_log(&self, namespace: &str) -> Result<()> {
        let namespace = namespace.to_string();
        self.kv
            .run(move |conn| {
                conn.execute(
                    "UPDATE kv_applied SET log_bytes = 0 WHERE namespace = ?1",
                    [&namespace],
                )?;
                Ok(())
            })
            .await
    }

    /// Whether a commit of `changes` under `checks` would be accepted now:
    /// `false` when a check fails, an error when it would break the quota.
    /// Writes nothing.
    pub async fn admits(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        changes: Vec<Change>,
    ) -> Result<bool> {
        let namespace = namespace.to_string();
        let quota = self.kv.limits.max_namespace_bytes;
        self.kv
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !checks_hold(&tx, &namespace, &checks, now_ms())? {
                    return Ok(false);
                }
                write(&tx, &namespace, 0, &changes, Some(quota))?;
                // Dropped: rolled back.
                Ok(true)
            })
            .await
    }

    /// Applies the commit at `seq` of the log (of `bytes` there), the
    /// namespace's `version`, to `namespace`.
    pub async fn apply(
        &self,
        namespace: &str,
        (seq, version): (u64, u64),
        changes: Vec<Change>,
        bytes: u64,
    ) -> Result<()> {
        let namespace = namespace.to_string();
        self.kv
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                write(&tx, &namespace, version, &changes, None)?;
                tx.execute(
                    "INSERT INTO kv_applied (namespace, seq, version, log_bytes) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(namespace) DO UPDATE SET seq = excluded.seq, version = excluded.version,
                     log_bytes = log_bytes + excluded.log_bytes",
                    params![namespace, seq as i64, version as i64, bytes as i64],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Replaces `namespace` with `keys`, as of `seq` and `version` (0 and
    /// no keys: forgets it).
    pub async fn restore(
        &self,
        namespace: &str,
        (seq, version): (u64, u64),
        keys: Vec<Stored>,
    ) -> Result<()> {
        let namespace = namespace.to_string();
        self.kv
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for table in ["kv", "kv_usage", "kv_applied"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE namespace = ?1"),
                        [&namespace],
                    )?;
                }
                for stored in &keys {
                    let put = Change::Put {
                        key: stored.entry.key.clone(),
                        value: stored.entry.value.clone(),
                        expires_at: stored.expires_at,
                    };
                    write(&tx, &namespace, stored.entry.version, &[put], None)?;
                }
                if seq > 0 {
                    tx.execute(
                        "INSERT INTO kv_applied (namespace, seq, version, log_bytes) VALUES (?1, ?2, ?3, 0)",
                        params![namespace, seq as i64, version as i64],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    /// Every key of `namespace`, expired ones left out, with the position
    /// they are as of: what a snapshot holds.
    pub async fn dump(&self, namespace: &str) -> Result<(Position, Vec<Stored>)> {
        let namespace = namespace.to_string();
        let position = self.position(&namespace).await?;
        self.kv
            .run(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT key, value, version, expires_at FROM kv WHERE namespace = ?1
                     AND (expires_at IS NULL OR expires_at > ?2) ORDER BY key",
                )?;
                let keys = stmt
                    .query_map(params![namespace, now_ms()], |row| {
                        Ok(Stored {
                            entry: Entry {
                                key: row.get(0)?,
                                value: row.get(1)?,
                                version: row.get::<_, i64>(2)? as u64,
                            },
                            expires_at: row.get(3)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((position, keys))
            })
            .await
    }

    /// The live value of `key`, as of the copy's position.
    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        KvStore::get(&self.kv, namespace, key).await
    }

    /// A page of live keys, as of the copy's position.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<ListPage> {
        KvStore::list(&self.kv, namespace, prefix, limit, cursor).await
    }

    /// Deletes expired keys from the copies (every copy expires a key at
    /// the same moment, so this changes nothing a read sees).
    pub async fn purge_expired(&self) -> Result<usize> {
        self.kv.purge_expired().await
    }
}
