//! Snapshots of KV namespaces, so their commit logs can be compacted.
//!
//! A snapshot is every live key of a namespace as of one commit, in the
//! object store `isola_kv_snapshots` under `<hex of the name>.<sequence>`.
//! Which snapshot is current is KV bucket `isola_kv_heads` (key: the hex
//! name; value: the snapshot's sequence and version, and the sequence of
//! the head before), moved only forward by compare-and-set, so of two
//! nodes snapshotting at once the older one's snapshot is dropped. Only
//! after the head moved is the log before the snapshot purged, and a copy
//! that finds commits missing loads the head's snapshot. A snapshot is
//! deleted when the head moves past the one after it, so one being read
//! when the head moves is still there.

use crate::buckets::{key_value, object_store};
use crate::kv::hex;
use crate::kvcodec::{put_bytes, take, take_bytes, take_i64, take_string};
use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use isola_kv::{Entry, KvError, Position, Result, Stored};

/// Log bytes a copy applies, past the namespace's size, before it
/// snapshots: a namespace's log stays under its data plus this.
const COMPACT_AFTER: u64 = 4 << 20;

/// Longest wait for a snapshot's bytes (one deleted while it is read never
/// ends): then the head is read again.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Times a lost race on the head is tried again.
const MAX_ATTEMPTS: usize = 8;

/// A namespace as of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The commit's sequence in the log.
    pub seq: u64,
    /// The namespace's version after it.
    pub version: u64,
    /// Its live keys.
    pub keys: Vec<Stored>,
}

/// The current snapshot of a namespace, as its head says.
struct Head {
    seq: u64,
    /// The head before (0: none): its snapshot is kept until the next move.
    previous: u64,
    revision: u64,
}

/// Whether a namespace at `position` should be snapshotted.
pub(crate) fn due(position: &Position) -> bool {
    position.log_bytes > COMPACT_AFTER.max(position.bytes)
}

fn storage(error: impl std::fmt::Display) -> KvError {
    KvError::Storage(error.to_string())
}

/// The snapshots and their heads.
pub(crate) struct Snapshots {
    heads: kv::Store,
    objects: ObjectStore,
}

impl Snapshots {
    pub async fn open(js: &jetstream::Context) -> Result<Self> {
        Ok(Self {
            heads: key_value(js, "isola_kv_heads").await.map_err(storage)?,
            objects: object_store(js, "isola_kv_snapshots")
                .await
                .map_err(storage)?,
        })
    }

    /// The current snapshot of `namespace`.
    pub async fn load(&self, namespace: &str) -> Result<Option<Snapshot>> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let name = hex(namespace);
        for _ in 0..3 {
            let Some(head) = self.head(&name).await? else {
                return Ok(None);
            };
            let mut object = match self.objects.get(format!("{name}.{}", head.seq)).await {
                Ok(object) => object,
                Err(error) if error.kind() == GetErrorKind::NotFound => continue,
                Err(error) => return Err(storage(error)),
            };
            let mut bytes = Vec::new();
            // A snapshot deleted while it is read leaves the reader waiting
            // for chunks that never come.
            match tokio::time::timeout(READ_TIMEOUT, object.read_to_end(&mut bytes)).await {
                Ok(read) => read.map_err(storage)?,
                Err(_) => continue,
            };
            return decode(&bytes).map(Some);
        }
        Err(storage(format!(
            "the KV snapshot of namespace {namespace} kept moving while it was read"
        )))
    }

    /// Stores `snapshot` of `namespace` and makes it current; `false` when
    /// a newer one already is (this one is dropped).
    pub async fn save(&self, namespace: &str, snapshot: &Snapshot) -> Result<bool> {
        use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
        let name = hex(namespace);
        let seq = snapshot.seq;
        let object = format!("{name}.{seq}");
        let bytes = encode(snapshot);
        self.objects
            .put(object.as_str(), &mut bytes.as_slice())
            .await
            .map_err(storage)?;
        for _ in 0..MAX_ATTEMPTS {
            let moved = match self.head(&name).await? {
                Some(head) if head.seq > seq => {
                    let _ = self.objects.delete(&object).await;
                    return Ok(false);
                }
                // Moved by this node, whose answer was lost, or by another
                // at the same commit: current either way.
                Some(head) if head.seq == seq => return Ok(true),
                Some(head) => {
                    let value = format!("{seq} {}", head.seq);
                    match self.heads.update(&name, value.into(), head.revision).await {
                        Ok(_) => Some(head.previous),
                        Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => None,
                        Err(error) => return Err(storage(error)),
                    }
                }
                None => match self.heads.create(&name, format!("{seq} 0").into()).await {
                    Ok(_) => Some(0),
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => None,
                    Err(error) => return Err(storage(error)),
                },
            };
            if let Some(previous) = moved {
                if previous != 0 {
                    let _ = self.objects.delete(&format!("{name}.{previous}")).await;
                }
                return Ok(true);
            }
        }
        Err(storage(format!(
            "the KV snapshot head of namespace {namespace} kept moving: gave up"
        )))
    }

    /// The current head of `name`.
    async fn head(&self, name: &str) -> Result<Option<Head>> {
        let Some(entry) = self.heads.entry(name).await.map_err(storage)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&entry.value).unwrap_or_default();
        let mut numbers = text.split(' ').map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(seq)), Some(Ok(previous))) => Ok(Some(Head {
                seq,
                previous,
                revision: entry.revision,
            })),
            _ => Err(storage(format!(
                "KV snapshot head {name} is not two sequences: {text:?}"
            ))),
        }
    }
}

/// A snapshot's bytes: its sequence and version (u64 each), then per key
/// the key and value (u32 length, bytes), version (u64) and expiry (i64,
/// `i64::MIN` for none), little-endian.
fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = snapshot.seq.to_le_bytes().to_vec();
    out.extend_from_slice(&snapshot.version.to_le_bytes());
    for stored in &snapshot.keys {
        put_bytes(&mut out, stored.entry.key.as_bytes());
        put_bytes(&mut out, &stored.entry.value);
        out.extend_from_slice(&stored.entry.version.to_le_bytes());
        out.extend_from_slice(&stored.expires_at.unwrap_or(i64::MIN).to_le_bytes());
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Snapshot> {
    let seq = u64::from_le_bytes(take::<8>(&mut bytes)?);
    let version = u64::from_le_bytes(take::<8>(&mut bytes)?);
    let mut keys = Vec::new();
    while !bytes.is_empty() {
        let key = take_string(&mut bytes)?;
        let value = take_bytes(&mut bytes)?.to_vec();
        let version = u64::from_le_bytes(take::<8>(&mut bytes)?);
        let expires_at = Some(take_i64(&mut bytes)?).filter(|&at| at != i64::MIN);
        keys.push(Stored {
            entry: Entry {
                key,
                value,
                version,
            },
            expires_at,
        });
    }
    Ok(Snapshot { seq, version, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_read_back_as_written() {
        let keys = vec![
            Stored {
                entry: Entry {
                    key: "a".into(),
                    value: vec![1; 10],
                    version: 3,
                },
                expires_at: None,
            },
            Stored {
                entry: Entry {
                    key: "b".into(),
                    value: Vec::new(),
                    version: 9,
                },
                expires_at: Some(5),
            },
        ];
        let snapshot = |keys: &[Stored]| Snapshot {
            seq: 42,
            version: 7,
            keys: keys.to_vec(),
        };
        assert_eq!(decode(&encode(&snapshot(&keys))).unwrap(), snapshot(&keys));
        let bytes = encode(&snapshot(&keys));
        // Cut between keys, it is a shorter snapshot; anywhere else, an
        // error.
        let whole = [16, encode(&snapshot(&keys[..1])).len()];
        for cut in (0..bytes.len()).filter(|cut| !whole.contains(cut)) {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_log_is_due_once_it_outgrows_its_data() {
        let at = |log_bytes, bytes| Position {
            seq: 1,
            version: 1,
            log_bytes,
            bytes,
        };
        assert!(!due(&at(COMPACT_AFTER, 0)));
        assert!(due(&at(COMPACT_AFTER + 1, 0)));
        assert!(!due(&at(COMPACT_AFTER + 1, 60 << 20)));
        assert!(due(&at(61 << 20, 60 << 20)));
    }
}
