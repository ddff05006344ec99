//! Per-function key-value storage.
//!
//! Every function has its own namespace; nothing in this interface lets one
//! namespace reach another's keys. [`KvStore`] is the interface (the
//! multi-node mode will implement it on NATS JetStream KV); [`SqliteKv`] is
//! the embedded default, in the node's data directory.
//!
//! Each write gives the key a new *version*, increasing per namespace.
//! [`KvStore::atomic`] applies a set of mutations only if every checked key
//! still has the version the caller read (`None`: the key must not exist),
//! which is how functions do check-and-set without lost updates.
//!
//! [`Replica`] is a node's copy of namespaces whose commits are ordered
//! elsewhere (a cluster's commit log): it checks a commit before it is
//! sent and applies commits, in the log's order, at the log's versions.

mod replica;
mod sqlite;

pub use replica::{Position, Replica, Stored};
pub use sqlite::SqliteKv;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// KV operations one invocation may make, in every runtime.
pub const MAX_OPS_PER_INVOCATION: u32 = 1000;

/// Key and value bytes one invocation may write (each write is a durable
/// commit on the node's disk), in every runtime.
pub const MAX_WRITE_BYTES_PER_INVOCATION: u64 = 16 << 20;

/// What one invocation may still do with KV: operations, and bytes
/// written. Shared by a runtime's KV binding and refilled at each
/// invocation.
#[derive(Debug)]
pub struct Budget {
    ops: std::sync::atomic::AtomicU32,
    write_bytes: std::sync::atomic::AtomicU64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            ops: MAX_OPS_PER_INVOCATION.into(),
            write_bytes: MAX_WRITE_BYTES_PER_INVOCATION.into(),
        }
    }
}

impl Budget {
    /// A full budget again, for the next invocation.
    pub fn refill(&self) {
        use std::sync::atomic::Ordering;
        self.ops.store(MAX_OPS_PER_INVOCATION, Ordering::Relaxed);
        self.write_bytes
            .store(MAX_WRITE_BYTES_PER_INVOCATION, Ordering::Relaxed);
    }

    /// Spends one operation, or says why not.
    pub fn spend_op(&self) -> std::result::Result<(), String> {
        use std::sync::atomic::Ordering;
        self.ops
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "KV operation limit reached: at most {MAX_OPS_PER_INVOCATION} per invocation"
                )
            })
    }

    /// Spends the bytes `mutations` write, or says why not (and spends
    /// nothing).
    pub fn spend_writes(&self, mutations: &[Mutation]) -> std::result::Result<(), String> {
        use std::sync::atomic::Ordering;
        let bytes: u64 = mutations.iter().map(|m| m.bytes() as u64).sum();
        self.write_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "KV write limit reached: at most {} MiB of keys and values per invocation",
                    MAX_WRITE_BYTES_PER_INVOCATION >> 20
                )
            })
    }
}

/// Size limits of keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most keys returned by one `list`.
    pub max_list: usize,
    /// Most mutations in one atomic commit (a put or a delete each).
    pub max_mutations: usize,
    /// Most version checks in one atomic commit.
    pub max_checks: usize,
    /// Most key and value bytes written by one atomic commit.
    pub max_commit_bytes: usize,
    /// Most key and value bytes one namespace may hold.
    pub max_namespace_bytes: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 1 << 20,
            max_list: 1000,
            max_mutations: 128,
            max_checks: 128,
            max_commit_bytes: 4 << 20,
            max_namespace_bytes: 64 << 20,
        }
    }
}

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Version of the last write.
    pub version: u64,
}

/// A page of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// Keys in order, with their versions.
    pub keys: Vec<(String, u64)>,
    /// Pass it back to continue after the last key; `None` at the end.
    pub cursor: Option<String>,
}

/// One change of an atomic operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Mutation {
    /// Sets a key, optionally expiring after `ttl_seconds`.
    Put {
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    },
    /// Removes a key.
    Delete { key: String },
}

impl Mutation {
    /// The key it changes.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }

    /// Key and value bytes it writes.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Put { key, value, .. } => key.len() + value.len(),
            Self::Delete { key } => key.len(),
        }
    }
}

/// A mutation as it is stored: a put's expiry is a point in time
/// (milliseconds since the Unix epoch), fixed when it was committed, so
/// every copy of a namespace expires it at the same moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets a key.
    Put {
        key: String,
        value: Vec<u8>,
        expires_at: Option<i64>,
    },
    /// Removes a key.
    Delete { key: String },
}

impl Change {
    /// `mutation` committed at `now` (milliseconds since the Unix epoch).
    pub fn at(mutation: Mutation, now: i64) -> Self {
        match mutation {
            Mutation::Put {
                key,
                value,
                ttl_seconds,
            } => Self::Put {
                key,
                value,
                expires_at: ttl_seconds.map(|s| {
                    now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000))
                }),
            },
            Mutation::Delete { key } => Self::Delete { key },
        }
    }

    /// The key it changes.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

/// A precondition of an atomic operation: `key` is at `version`
/// (`None`: the key does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The key.
    pub key: String,
    /// The version it must still have.
    pub version: Option<u64>,
}

/// What can go wrong, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A key or value is too large, or a key is empty.
    #[error("{0}")]
    Invalid(String),
    /// The namespace would hold more than its quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The storage failed.
    #[error("kv storage error: {0}")]
    Storage(String),
    /// A commit was sent but its answer lost: it may or may not have been
    /// applied.
    #[error("the KV commit may or may not have been applied: {0}")]
    Indeterminate(String),
}

impl KvError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "kv_invalid",
            Self::QuotaExceeded(_) => "kv_quota_exceeded",
            Self::Storage(_) => "kv_storage",
            Self::Indeterminate(_) => "kv_indeterminate",
        }
    }

    /// What a function is told: storage failures without their detail
    /// (paths, servers, other namespaces' numbers), which the node logs.
    pub fn public_message(&self) -> String {
        match self {
            Self::Invalid(message) | Self::QuotaExceeded(message) => message.clone(),
            Self::Storage(_) => "KV storage failed: try again".into(),
            Self::Indeterminate(_) => {
                "the KV commit may or may not have been applied: read the keys again".into()
            }
        }
    }
}

impl From<rusqlite::Error> for KvError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Storage(error.to_string())
    }
}

/// Results of the store.
pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// Checks a key against the limits.
pub fn check_key(limits: &KvLimits, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(KvError::Invalid("KV keys must not be empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(KvError::Invalid(format!(
            "KV key of {} bytes is longer than the limit of {} bytes",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(())
}

/// Checks a value against the limits.
pub fn check_value(limits: &KvLimits, value: &[u8]) -> Result<()> {
    if value.len() > limits.max_value_bytes {
        return Err(KvError::Invalid(format!(
            "KV value of {} bytes is larger than the limit of {} bytes",
            value.len(),
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// Checks an atomic commit against the limits: how many checks and
/// mutations, each key and value, and the bytes it writes.
pub fn validate(limits: &KvLimits, checks: &[Check], mutations: &[Mutation]) -> Result<()> {
    if checks.len() > limits.max_checks {
        return Err(KvError::Invalid(format!(
            "an atomic commit may hold at most {} checks, got {}",
            limits.max_checks,
            checks.len()
        )));
    }
    if mutations.len() > limits.max_mutations {
        return Err(KvError::Invalid(format!(
            "an atomic commit may hold at most {} mutations, got {}",
            limits.max_mutations,
            mutations.len()
        )));
    }
    for check in checks {
        check_key(limits, &check.key)?;
    }
    for mutation in mutations {
        check_key(limits, mutation.key())?;
        if let Mutation::Put { value, .. } = mutation {
            check_value(limits, value)?;
        }
    }
    let written: usize = mutations.iter().map(Mutation::bytes).sum();
    if written > limits.max_commit_bytes {
        return Err(KvError::Invalid(format!(
            "an atomic commit may write at most {} bytes of keys and values, got {written}",
            limits.max_commit_bytes
        )));
    }
    Ok(())
}

/// Key-value storage with a namespace per function.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key`, if it exists and has not expired.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>>;
    /// Keys starting with `prefix`, in order, after `cursor`, at most `limit`.
    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<ListPage>;
    /// Applies `mutations` if every check holds; returns the new version, or
    /// `None` when a check failed (nothing was written).
    async fn atomic(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>>;
    /// The limits this store enforces.
    fn limits(&self) -> KvLimits;

    /// Sets `key` (a one-mutation atomic operation without checks).
    async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> Result<u64> {
        let mutation = Mutation::Put {
            key: key.to_string(),
            value,
            ttl_seconds,
        };
        Ok(self
            .atomic(namespace, Vec::new(), vec![mutation])
            .await?
            .unwrap_or_default())
    }

    /// Removes `key`.
    async fn delete(&self, namespace: &str, key: &str) -> Result<()> {
        self.atomic(
            namespace,
            Vec::new(),
            vec![Mutation::Delete {
                key: key.to_string(),
            }],
        )
        .await?;
        Ok(())
    }
}
