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
//! - **Compaction** runs beside the commits, one namespace at a time per
//!   node: once a copy has applied more log than the namespace holds (and
//!   4 MiB), it snapshots the namespace and purges the log before it.
//!
//! In a cluster a commit is one NATS message: its bytes are bounded by the
//! server's `max_payload` (1 MiB by default), less than one node's 4 MiB.

use crate::kvcodec::{decode, encode};
use crate::snapshots::{Snapshot, Snapshots};
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

/// The header with the namespace's version after the commit.
const VERSION_HEADER: &str = "Isola-Kv-Version";

/// Bytes of a commit's message kept for its headers and framing.
const MESSAGE_ROOM: usize = 8 << 10;

/// Bytes a message costs the log beyond its payload (subject, headers,
/// index), counted towards compaction: empty commits are not free.
const MESSAGE_OVERHEAD: u64 = 128;

/// Times a commit is tried again after losing a race to another node's.
const MAX_ATTEMPTS: usize = 32;

/// Function KV shared by the nodes of a cluster.
#[derive(Clone)]
pub struct JetStreamKv(Arc<Inner>);

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    replica: Replica,
    snapshots: Snapshots,
    /// One lock per namespace this node has used: its copy is caught up
    /// and committed to by one task at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Whole namespaces in memory (a snapshot being written or read), one
    /// at a time on this node. Taken after a namespace's lock, never
    /// before.
    whole: tokio::sync::Semaphore,
    /// Namespaces this node is compacting: one compaction each at a time.
    compacting: Mutex<std::collections::HashSet<String>>,
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

/// Where a copy stands in its log: the sequence of its last commit there,
/// and the namespace's version after it.
type At = (u64, u64);

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
        Ok(Self(Arc::new(Inner {
            client,
            js,
            stream,
            replica,
            snapshots,
            locks: Mutex::default(),
            whole: tokio::sync::Semaphore::new(1),
            compacting: Mutex::default(),
            limits,
        })))
    }
}

impl Inner {
    fn lock(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(namespace.to_string()).or_default().clone()
    }

    /// Brings the copy of `namespace` up to its log's last commit; returns
    /// where it then stands. Call with the namespace's lock.
    async fn catch_up(&self, namespace: &str, subject: &str) -> Result<At> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
        let position = self.replica.position(namespace).await?;
        let mut at = (position.seq, position.version);
        let last = match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(last) => last,
            Err(error) if error.kind() == Kind::NoMessageFound => {
                if at.0 != 0 {
                    self.replica.restore(namespace, (0, 0), Vec::new()).await?;
                }
                return Ok((0, 0));
            }
            Err(error) => return Err(storage(error)),
        };
        if last.sequence < at.0 {
            // The log is not the one this copy was made from.
            self.replica.restore(namespace, (0, 0), Vec::new()).await?;
            at = (0, 0);
        }
        while at.0 < last.sequence {
            let next = match header(&last, PREV_HEADER)? == at.0 {
                true => last.clone(),
                false => self
                    .stream
                    .raw_message_builder()
                    .sequence(at.0 + 1)
                    .next_by_subject(subject.to_string())
                    .send()
                    .await
                    .map_err(storage)?,
            };
            let prev = header(&next, PREV_HEADER)?;
            if prev != at.0 {
                // The commits after `at` were compacted away.
                at = self.restore_snapshot(namespace, prev).await?;
                continue;
            }
            let version = header(&next, VERSION_HEADER)?;
            if version != at.1 + 1 {
                return Err(storage(format!(
                    "the KV log of namespace {namespace} is damaged: commit {} is version {version} after {}",
                    next.sequence, at.1
                )));
            }
            let changes = decode(&next.payload)?;
            let bytes = next.payload.len() as u64 + MESSAGE_OVERHEAD;
            self.replica
                .apply(namespace, (next.sequence, version), changes, bytes)
                .await?;
            at = (next.sequence, version);
        }
        Ok(at)
    }

    /// Replaces the copy of `namespace` with its snapshot, which must reach
    /// at least sequence `needed`; returns where the copy then stands.
    async fn restore_snapshot(&self, namespace: &str, needed: u64) -> Result<At> {
        let _whole = self.whole.acquire().await.map_err(storage)?;
        let snapshot = self.snapshots.load(namespace).await?.ok_or_else(|| {
            storage(format!(
                "the KV log of namespace {namespace} lacks commits before {needed}, and it has no snapshot"
            ))
        })?;
        if snapshot.seq < needed {
            return Err(storage(format!(
                "the KV snapshot of namespace {namespace} is at {}, older than the log it should start ({needed})",
                snapshot.seq
            )));
        }
        let at = (snapshot.seq, snapshot.version);
        self.replica.restore(namespace, at, snapshot.keys).await?;
        Ok(at)
    }

    async fn commit(
        self: &Arc<Self>,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>> {
        use async_nats::jetstream::context::PublishErrorKind;
        let subject = subject(namespace);
        let lock = self.lock(namespace);
        let _held = lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let (last, version) = self.catch_up(namespace, &subject).await?;
            let now = crate::registry::now_ms();
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
            if changes.is_empty() {
                // Checks alone: they hold, and there is nothing to write.
                return Ok(Some(version));
            }
            let payload = encode(&changes);
            let bytes = payload.len() as u64 + MESSAGE_OVERHEAD;
            let id = self.client.new_inbox();
            let publish = PublishMessage::build()
                .payload(payload.into())
                .header(PREV_HEADER, last.to_string().as_str())
                .header(VERSION_HEADER, (version + 1).to_string().as_str())
                .message_id(id.rsplit('.').next().unwrap_or_default())
                .expected_last_subject_sequence(last);
            let sent = self.js.send_publish(subject.clone(), publish).await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            match acked {
                Ok(ack) => {
                    let at = (ack.sequence, version + 1);
                    self.replica.apply(namespace, at, changes, bytes).await?;
                    self.compact_if_due(namespace).await;
                    return Ok(Some(version + 1));
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(error) => return Err(KvError::Indeterminate(error.to_string())),
            }
        }
        Err(storage(format!(
            "namespace {namespace} is committed to too often at once: gave up after {MAX_ATTEMPTS} tries"
        )))
    }

    /// Starts compacting `namespace` beside the commits when the log this
    /// copy applied since its last snapshot outgrew the data.
    async fn compact_if_due(self: &Arc<Self>, namespace: &str) {
        match self.replica.position(namespace).await {
            Ok(position) if crate::snapshots::due(&position) => {}
            _ => return,
        }
        let mut compacting = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        if !compacting.insert(namespace.to_string()) {
            return;
        }
        drop(compacting);
        let (inner, namespace) = (self.clone(), namespace.to_string());
        tokio::spawn(async move {
            if let Err(error) = inner.compact(&namespace).await {
                tracing::warn!(%error, namespace, "could not compact a KV namespace's log");
            }
            let mut compacting = inner.compacting.lock().unwrap_or_else(|p| p.into_inner());
            compacting.remove(&namespace);
        });
    }

    /// Snapshots `namespace` as its copy stands, then purges the log
    /// before the snapshot.
    async fn compact(&self, namespace: &str) -> Result<()> {
        let lock = self.lock(namespace);
        let held = lock.lock().await;
        let whole = self.whole.acquire().await.map_err(storage)?;
        let (position, keys) = self.replica.dump(namespace).await?;
        // Counted from here, whether or not the snapshot lands: a node that
        // cannot write one tries again after as much log again.
        self.replica.restart_log(namespace).await?;
        drop(held);
        let snapshot = Snapshot {
            seq: position.seq,
            version: position.version,
            keys,
        };
        let current = self.snapshots.save(namespace, &snapshot).await?;
        drop(whole);
        if current {
            self.stream
                .purge()
                .filter(subject(namespace))
                .sequence(position.seq)
                .await
                .map_err(storage)?;
        }
        Ok(())
    }

    async fn read<T>(
        &self,
        namespace: &str,
        read: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let lock = self.lock(namespace);
        let _held = lock.lock().await;
        self.catch_up(namespace, &subject(namespace)).await?;
        read.await
    }
}

/// The number in header `name` of `message`.
fn header(message: &jetstream::message::StreamMessage, name: &str) -> Result<u64> {
    message
        .headers
        .get(name)
        .and_then(|value| value.as_str().parse().ok())
        .ok_or_else(|| {
            storage(format!(
                "KV commit {} has no {name} header",
                message.sequence
            ))
        })
}

#[async_trait]
impl KvStore for JetStreamKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Entry>> {
        isola_kv::check_key(&self.0.limits, key)?;
        self.0
            .read(namespace, self.0.replica.get(namespace, key))
            .await
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<ListPage> {
        let limit = limit.clamp(1, self.0.limits.max_list);
        let page = self.0.replica.list(namespace, prefix, limit, cursor);
        self.0.read(namespace, page).await
    }

    async fn atomic(
        &self,
        namespace: &str,
        checks: Vec<Check>,
        mutations: Vec<Mutation>,
    ) -> Result<Option<u64>> {
        validate(&self.0.limits, &checks, &mutations)?;
        self.0.commit(namespace, checks, mutations).await
    }

    fn limits(&self) -> KvLimits {
        self.0.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_hold_any_name() {
        assert_eq!(subject("a.b *>"), "isola.kv.612e62202a3e");
    }
}
