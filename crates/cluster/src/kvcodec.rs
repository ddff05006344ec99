//! The bytes of a KV commit in the log: its changes, each a tag (0 put,
//! 1 delete), the key (u32 length, bytes), and for a put the value (u32
//! length, bytes) and its expiry (i64, `i64::MIN` for none), all
//! little-endian; and the readers the snapshots' format shares.

use isola_kv::{Change, KvError, Result};

fn storage(error: impl std::fmt::Display) -> KvError {
    KvError::Storage(error.to_string())
}

/// A commit's changes as a message's bytes.
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
}
