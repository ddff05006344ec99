//! Function KV across nodes: a commit log per namespace in JetStream, and
//! on each node a SQLite copy of the namespaces it uses.
//!
//! JetStream has no multi-key transactions, and isola's KV commits several
//! keys at once under version checks. So a namespace is a log: stream
//! `ISOLA_KV`, one subject per namespace (`isola.kv.<hex of the name>`), one
//! message per commit, holding its changes (a put's expiry as a point in
//! time). Sequence numbers are versions.
//!
//! - **A commit** first brings the node's copy ([`isola_kv::Replica`]) up
//!   to the subject's last message, checks its version checks and the
//!   quota there, and publishes with `Nats-Expected-Last-Subject-Sequence`
//!   set to that message: if another node committed meanwhile the server
//!   refuses it, and the node catches up and checks again. Two racing
//!   commits cannot both land.
//! - **A read** first asks for the subject's last message (one request to
//!   the stream's leader) and applies what the copy lacks: reads see every
//!   commit acknowledged before them, on any node.
//! - Each message names the commit before it on its subject
//!   (`Isola-Kv-Prev`), so a copy that finds a gap knows history was
//!   compacted and starts from the namespace's snapshot (`snapshots`).
//!
//! In a cluster a commit is one NATS message: its bytes are bounded by the
//! server's `max_payload` (1 MiB by default), less than one node's 4 MiB.

use crate::snapshots::Snapshots;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use async_trait::async_trait;
use isola_kv::{
    validate, Change, Check, Entry, KvError, KvLimits, KvStore, ListPage, Mutation, Replica, Result,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The stream of every namespace's commits.
pub const STREAM: &str = "ISOLA_KV";

/// The header naming the sequence of the commit before, on its subject.
const PREV_HEADER: &str = "Isola-Kv-Prev";

/// Bytes of a commit's message kept for its headers and framing.
const MESSAGE_ROOM: usize = 8 << 10;

/// Times a commit is tried again after losing a race to another node's.
const MAX_ATTEMPTS: usize = 32;

/// Function KV shared by the nodes of a cluster.
pub struct JetStreamKv {
    js: jetstream::Context,
    stream: stream::Stream,
    replica: Replica,
    snapshots: Snapshots,
    /// One lock per namespace this node has used: its copy is caught up
    /// and committed to by one task at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    limits: KvLimits,
}

fn storage(error: impl std::fmt::Display) -> KvError {
    KvError::Storage(error.to_string())
}

/// The subject of `namespace`'s commits.
fn subject(namespace: &str) -> String {
    format!("isola.kv.{}", hex(namespace))
}

pub(crate) fn hex(namespace: &str) -> String {
    namespace.bytes().map(|b| format!("{b:02x}")).collect()
}

impl JetStreamKv {
    /// Opens the cluster's KV over `client`, keeping this node's copies in
    /// `replica`. Its limits are `limits`, with commits and values no
    /// larger than a message of the server allows.
    pub async fn open(
        client: async_nats::Client,
        replica: Replica,
        limits: KvLimits,
    ) -> Result<Self> {
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.to_string(),
                subjects: vec!["isola.kv.>".to_string()],
                // Unbounded here: each namespace's log is bounded by
                // compaction (its data, within the quota, plus 4 MiB), and
                // the server's JetStream storage bounds them all.
                discard: stream::DiscardPolicy::New,
                // One replica: compare-and-set on replicated streams is not
                // serializable before nats-server 2.9.21.
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(storage)?;
        let snapshots = Snapshots::open(&js).await?;
        let room = client
            .server_info()
            .max_payload
            .saturating_sub(MESSAGE_ROOM);
        let max_commit_bytes = limits.max_commit_bytes.min(room);
        let limits = KvLimits {
            max_commit_bytes,
            max_value_bytes: limits
                .max_value_bytes
                .min(max_commit_bytes.saturating_sub(limits.max_key_bytes)),
            ..limits
        };
        Ok(Self {
            js,
            stream,
            replica,
            snapshots,
            locks: Mutex::default(),
            limits,
        })
    }

    /// This node's copies (to purge their expired keys).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    fn lock(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(namespace.to_string()).or_default().clone()
    }

    /// Brings the copy of `namespace` up to its log's last commit; returns
    /// that commit's sequence (0: none). Call with the namespace's lock.
    async fn catch_up(&self, namespace: &str, subject: &str) -> Result<u64> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
        let mut at = self.replica.position(namespace).await?.seq;
        let last = match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(last) => last,
            Err(error) if error.kind() == Kind::NoMessageFound => {
                if at != 0 {
                    self.replica.restore(namespace, 0, Vec::new()).await?;
                }
                return Ok(0);
            }
            Err(error) => return Err(storage(error)),
        };
        if last.sequence < at {
            // The log is not the one this copy was made from.
            self.replica.restore(namespace, 0, Vec::new()).await?;
            at = 0;
        }
        while at < last.sequence {
            let next = match prev(&last)? == at {
                true => last.clone(),
                false => self
                    .stream
                    .raw_message_builder()
                    .sequence(at + 1)
                    .next_by_subject(subject.to_string())
                    .send()
                    .await
                    .map_err(storage)?,
            };
            if prev(&next)? != at {
                // The commits after `at` were compacted away.
                at = self.restore_snapshot(namespace, prev(&next)?).await?;
                continue;
            }
            let changes = decode(&next.payload)?;
            let bytes = next.payload.len() as u64;
            self.replica
                .apply(namespace, next.sequence, changes, bytes)
                .await?;
            at = next.sequence;
        }
        Ok(at)
    }

    /// Replaces the copy of `namespace` with its snapshot, which must reach
    /// at least `needed`; returns the snapshot's sequence.
    async fn restore_snapshot(&self, namespace: &str, needed: u64) -> Result<u64> {
        let (seq, keys) = self.snapshots.load(namespace).await?.ok_or_else(|| {
            storage(format!(
                "the KV log of namespace {namespace} lacks commits before {needed}, and it has no snapshot"
            ))
        })?;
        if seq < needed {
            return Err(storage(format!(
                "the KV snapshot of namespace {namespace} is at {seq}, older than the log it should start ({needed})"
            )));
        }
        self.replica.restore(namespace, seq, keys).await?;
        Ok(seq)
    }

    async fn commit(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>> {
        use async_nats::jetstream::context::PublishErrorKind;
        let subject = subject(namespace);
        let lock = self.lock(namespace);
        let _held = lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let last = self.catch_up(namespace, &subject).await?;
            let now = now_ms();
            let changes: Vec<Change> = mutations
                .iter()
                .map(|m| Change::at(m.clone(), now))
                .collect();
            if !self
                .replica
                .admits(namespace, checks.clone(), changes.clone())
                .await?
            {
                return Ok(None);
            }
            let payload = encode(&changes);
            let bytes = payload.len() as u64;
            let publish = PublishMessage::build()
                .payload(payload.into())
                .header(PREV_HEADER, last.to_string().as_str())
                .expected_last_subject_sequence(last);
            let sent = self.js.send_publish(subject.clone(), publish).await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            match acked {
                Ok(ack) => {
                    self.replica
                        .apply(namespace, ack.sequence, changes, bytes)
                        .await?;
                    self.maybe_compact(namespace).await;
                    return Ok(Some(ack.sequence));
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(error) => return Err(storage(error)),
            }
        }
        Err(storage(format!(
            "namespace {namespace} is committed to too often at once: gave up after {MAX_ATTEMPTS} tries"
        )))
    }

    /// Snapshots `namespace` and drops the log before it, when the log
    /// this copy applied since its last snapshot outgrew the data. Call
    /// with the namespace's lock.
    async fn maybe_compact(&self, namespace: &str) {
        match self.replica.position(namespace).await {
            Ok(position) if crate::snapshots::due(&position) => {}
            _ => return,
        }
        if let Err(error) = self.compact(namespace).await {
            tracing::warn!(%error, namespace, "could not compact a KV namespace's log");
        }
    }

    async fn compact(&self, namespace: &str) -> Result<()> {
        let (seq, keys) = self.replica.dump(namespace).await?;
        // Counted from here, whether or not the snapshot lands: a node that
        // cannot write one tries again after as much log again.
        self.replica.restart_log(namespace).await?;
        if !self.snapshots.save(namespace, seq, &keys).await? {
            return Ok(());
        }
        self.stream
            .purge()
            .filter(subject(namespace))
            .sequence(seq)
            .await
            .map_err(storage)?;
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The sequence of the commit before `message` on its subject.
fn prev(message: &jetstream::message::StreamMessage) -> Result<u64> {
    message
        .headers
        .get(PREV_HEADER)
        .and_then(|value| value.as_str().parse().ok())
        .ok_or_else(|| {
            storage(format!(
                "KV commit {} has no {PREV_HEADER} header",
                message.sequence
            ))
        })
}

/// A commit's changes as a message: per change a tag (0 put, 1 delete),
/// the key (u32 length, bytes), and for a put the value (u32 length,
/// bytes) and its expiry (i64, `i64::MIN` for none), little-endian.
pub(crate) fn encode(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        match change {
            Change::Put {
                key,
                value,
                expires_at,
            } => {
                out.push(0);
                put_bytes(&mut out, key.as_bytes());
                put_bytes(&mut out, value);
                out.extend_from_slice(&expires_at.unwrap_or(i64::MIN).to_le_bytes());
            }
            Change::Delete { key } => {
                out.push(1);
                put_bytes(&mut out, key.as_bytes());
            }
        }
    }
    out
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads what [`encode`] wrote.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let key = take_string(&mut bytes)?;
        changes.push(match tag {
            0 => Change::Put {
                key,
                value: take_bytes(&mut bytes)?.to_vec(),
                expires_at: Some(take_i64(&mut bytes)?).filter(|&at| at != i64::MIN),
            },
            1 => Change::Delete { key },
            other => return Err(storage(format!("a KV commit holds change tag {other}"))),
        });
    }
    Ok(changes)
}

fn truncated() -> KvError {
    storage("a KV commit or snapshot is cut short")
}

pub(crate) fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = u32::from_le_bytes(take::<4>(bytes)?) as usize;
    if bytes.len() < len {
        return Err(truncated());
    }
    let (taken, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(taken)
}

pub(crate) fn take_string(bytes: &mut &[u8]) -> Result<String> {
    String::from_utf8(take_bytes(bytes)?.to_vec()).map_err(storage)
}

pub(crate) fn take_i64(bytes: &mut &[u8]) -> Result<i64> {
    Ok(i64::from_le_bytes(take::<8>(bytes)?))
}

pub(crate) fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N]> {
    let (taken, rest) = bytes.split_first_chunk::<N>().ok_or_else(truncated)?;
    *bytes = rest;
    Ok(*taken)
}

#[async_trait]
impl KvStore for JetStreamKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        isola_kv::check_key(&self.limits, key)?;
        let lock = self.lock(namespace);
        let _held = lock.lock().await;
        self.catch_up(namespace, &subject(namespace)).await?;
        self.replica.get(namespace, key).await
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<ListPage> {
        let limit = limit.clamp(1, self.limits.max_list);
        let lock = self.lock(namespace);
        let _held = lock.lock().await;
        self.catch_up(namespace, &subject(namespace)).await?;
        self.replica.list(namespace, prefix, limit, cursor).await
    }

    async fn atomic(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>> {
        validate(&self.limits, &checks, &mutations)?;
        self.commit(namespace, checks, mutations).await
    }

    fn limits(&self) -> KvLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_read_back_as_written() {
        let changes = vec![
            Change::Put {
                key: "a".into(),
                value: vec![0, 1, 2],
                expires_at: Some(1_700_000_000_000),
            },
            Change::Put {
                key: "ключ".into(),
                value: Vec::new(),
                expires_at: None,
            },
            Change::Delete { key: "b".into() },
        ];
        assert_eq!(decode(&encode(&changes)).unwrap(), changes);
        assert!(decode(&[]).unwrap().is_empty());
    }

    #[test]
    fn damaged_commits_are_errors_not_panics() {
        let bytes = encode(&[Change::Put {
            key: "key".into(),
            value: vec![7; 100],
            expires_at: None,
        }]);
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9, 0, 0, 0, 0]).is_err());
        assert!(decode(&[0, 255, 255, 255, 255]).is_err());
    }

    #[test]
    fn subjects_hold_any_name() {
        assert_eq!(subject("a.b *>"), "isola.kv.612e62202a3e");
    }
}
