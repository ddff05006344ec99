//! Snapshots of KV namespaces, so their commit logs can be compacted.
//!
//! A snapshot is every live key of a namespace as of one commit, in the
//! object store `isola_kv_snapshots` under `<hex of the name>.<sequence>`.
//! Which snapshot is current is KV bucket `isola_kv_heads` (key: the hex
//! name, value: the sequence), moved only forward by compare-and-set, so of
//! two nodes snapshotting at once the older one's snapshot is dropped.
//! Only after the head moved is the log before the snapshot purged, and a
//! copy that finds commits missing loads the head's snapshot.

use crate::buckets::{key_value, object_store};
use crate::kv::{hex, put_bytes, take, take_bytes, take_i64, take_string};
use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use isola_kv::{Entry, KvError, Position, Result, Stored};

/// Log bytes a copy applies, past the namespace's size, before it
/// snapshots: a namespace's log stays under its data plus this.
const COMPACT_AFTER: u64 = 4 << 20;

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

    /// The current snapshot of `namespace`: its sequence and keys.
    pub async fn load(&self, namespace: &str) -> Result<Option<(u64, Vec<Stored>)>> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let name = hex(namespace);
        // A head can move on, and its old snapshot go, between the two
        // reads: read the head again.
        for _ in 0..3 {
            let Some(seq) = self.head(&name).await?.map(|(seq, _)| seq) else {
                return Ok(None);
            };
            let mut object = match self.objects.get(format!("{name}.{seq}")).await {
                Ok(object) => object,
                Err(error) if error.kind() == GetErrorKind::NotFound => continue,
                Err(error) => return Err(storage(error)),
            };
            let mut bytes = Vec::new();
            object.read_to_end(&mut bytes).await.map_err(storage)?;
            return decode(&bytes).map(Some);
        }
        Err(storage(format!(
            "the KV snapshot of namespace {namespace} kept moving while it was read"
        )))
    }

    /// Stores the snapshot of `namespace` at `seq` and makes it current;
    /// `false` when a newer one already is (this one is dropped).
    pub async fn save(&self, namespace: &str, seq: u64, keys: &[Stored]) -> Result<bool> {
        let name = hex(namespace);
        let object = format!("{name}.{seq}");
        let bytes = encode(seq, keys);
        self.objects
            .put(object.as_str(), &mut bytes.as_slice())
            .await
            .map_err(storage)?;
        loop {
            let moved = match self.head(&name).await? {
                Some((current, _)) if current >= seq => {
                    let _ = self.objects.delete(&object).await;
                    return Ok(false);
                }
                Some((current, revision)) => self
                    .heads
                    .update(&name, seq.to_string().into(), revision)
                    .await
                    .map(|_| Some(current))
                    .map_err(|e| e.to_string()),
                None => self
                    .heads
                    .create(&name, seq.to_string().into())
                    .await
                    .map(|_| None)
                    .map_err(|e| e.to_string()),
            };
            // A lost race: read the head again.
            if let Ok(old) = moved {
                if let Some(old) = old {
                    let _ = self.objects.delete(&format!("{name}.{old}")).await;
                }
                return Ok(true);
            }
        }
    }

    /// The current head of `name`: its sequence and revision.
    async fn head(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let Some(entry) = self.heads.entry(name).await.map_err(storage)? else {
            return Ok(None);
        };
        let seq = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| storage(format!("KV snapshot head {name} is not a sequence")))?;
        Ok(Some((seq, entry.revision)))
    }
}

/// A snapshot's bytes: its sequence (u64), then per key the key and value
/// (u32 length, bytes), version (u64) and expiry (i64, `i64::MIN` for
/// none), little-endian.
fn encode(seq: u64, keys: &[Stored]) -> Vec<u8> {
    let mut out = seq.to_le_bytes().to_vec();
    for stored in keys {
        put_bytes(&mut out, stored.entry.key.as_bytes());
        put_bytes(&mut out, &stored.entry.value);
        out.extend_from_slice(&stored.entry.version.to_le_bytes());
        out.extend_from_slice(&stored.expires_at.unwrap_or(i64::MIN).to_le_bytes());
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<(u64, Vec<Stored>)> {
    let seq = u64::from_le_bytes(take::<8>(&mut bytes)?);
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
    Ok((seq, keys))
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
        assert_eq!(decode(&encode(42, &keys)).unwrap(), (42, keys.clone()));
        let bytes = encode(42, &keys);
        // Cut between keys, it is a shorter snapshot; anywhere else, an
        // error.
        let whole = [8, encode(42, &keys[..1]).len()];
        for cut in (0..bytes.len()).filter(|cut| !whole.contains(cut)) {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_log_is_due_once_it_outgrows_its_data() {
        let at = |log_bytes, bytes| Position {
            seq: 1,
            log_bytes,
            bytes,
        };
        assert!(!due(&at(COMPACT_AFTER, 0)));
        assert!(due(&at(COMPACT_AFTER + 1, 0)));
        assert!(!due(&at(COMPACT_AFTER + 1, 60 << 20)));
        assert!(due(&at(61 << 20, 60 << 20)));
    }
}
