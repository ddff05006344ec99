//! Deployment secrets at rest: sealed with AES-256-GCM under a node key
//! kept apart from the database (a 32-byte random key in its own 0600
//! file), one random nonce per value, stored as `v1:<base64(nonce ||
//! ciphertext)>`. The secret's name is bound as associated data, so sealed
//! values cannot be swapped between names.
//!
//! The database records a sealed check value: opened with another key, it
//! fails cleanly and changes nothing. A database from before encryption
//! has its plaintext secrets sealed when first opened with a key, and is
//! then scrubbed (secure delete, WAL truncated, vacuumed) so no plaintext
//! remains in its files.

use crate::{Result, StoreError};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
/// The settings key of the sealed check value.
const CHECK_KEY: &str = "node_key_check";
const CHECK_PLAINTEXT: &str = "isola node key check";

/// The node's secret-sealing key.
#[derive(Clone)]
pub struct NodeKey([u8; 32]);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl NodeKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Reads the key file at `path` (64 hex characters).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Key(format!("cannot read the node key {}: {e}", path.display()))
        })?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        bytes.map(Self).ok_or_else(|| {
            StoreError::Key(format!(
                "the node key {} is not 64 hexadecimal characters",
                path.display()
            ))
        })
    }

    /// Writes a new random key to `path` (mode 0600); fails if it exists.
    pub fn create(path: &Path) -> Result<Self> {
        let key = Self::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(path).and_then(|mut file| {
            file.write_all(format!("{}\n", hex::encode(key.0)).as_bytes())?;
            file.sync_all()
        });
        written.map_err(|e| {
            StoreError::Key(format!(
                "cannot create the node key {}: {e}",
                path.display()
            ))
        })?;
        Ok(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0).expect("a 32-byte key")
    }

    /// A keyed digest of secret `name`'s value (HMAC-SHA-256 under a key
    /// derived from the node key): equal values give equal digests, and
    /// without the node key a digest says nothing about its value.
    pub fn digest(&self, name: &str, value: &str) -> String {
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256};
        // A key of its own for digests, apart from the sealing key.
        let key = Sha256::new()
            .chain_update(b"isola secret digest v1")
            .chain_update(self.0)
            .finalize();
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seals the value of secret `name`.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: value.as_bytes(),
            aad: name.as_bytes(),
        };
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encryption of an in-memory value");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// Opens a value sealed by [`NodeKey::seal`] for secret `name`.
    pub fn open(&self, name: &str, stored: &str) -> Result<String> {
        let wrong = || {
            StoreError::Key(format!(
                "secret {name:?} cannot be decrypted with this node key"
            ))
        };
        let encoded = stored.strip_prefix(PREFIX).ok_or_else(wrong)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| wrong())?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: name.as_bytes(),
        };
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }

    /// Seals every value of a secrets map.
    pub fn seal_all(&self, secrets: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        secrets
            .iter()
            .map(|(name, value)| (name.clone(), self.seal(name, value)))
            .collect()
    }

    /// Opens every value of a sealed secrets map.
    pub fn open_all(&self, sealed: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        sealed
            .into_iter()
            .map(|(name, value)| {
                let plain = self.open(&name, &value)?;
                Ok((name, plain))
            })
            .collect()
    }
}

/// Whether the database at `path` holds secrets sealed with a node key
/// (so that opening it needs that key). Reads only.
pub fn database_is_sealed(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_settings: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings')",
        [],
        |row| row.get(0),
    )?;
    if !has_settings {
        return Ok(false);
    }
    Ok(check_value(&conn)?.is_some())
}

/// The sealed check value, when the database has been sealed.
fn check_value(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [CHECK_KEY],
            |row| row.get(0),
        )
        .optional()?)
}

/// Checks that `key` is the database's key; on a database never sealed,
/// seals its plaintext secrets, records the check value and scrubs the
/// files. Nothing is written when the key is the wrong one.
pub fn prepare(conn: &mut Connection, key: &NodeKey) -> Result<()> {
    let check = check_value(conn)?;
    if let Some(check) = check {
        return match key.open(CHECK_KEY, &check) {
            Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
            _ => Err(StoreError::Key(
                "this database's secrets were sealed with another node key: start with the \
                 node.key that belongs to this data directory (--node-key-file); nothing was changed"
                    .into(),
            )),
        };
    }
    seal_plaintext(conn, key)?;
    scrub(conn)
}

/// Seals every deployment's secrets, hashes it again with secret values
/// entering through the keyed digest (the old hash covered them in plain),
/// and records the check value, in one transaction.
fn seal_plaintext(conn: &mut Connection, key: &NodeKey) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows = {
        let mut stmt = tx.prepare(
            "SELECT rowid, secrets, files, entry, limits, env, kv_binding, allowed_hosts FROM deployments",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    [
                        row.get::<_, String>(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(7)?,
                    ],
                    row.get::<_, Option<String>>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    for (rowid, secrets, [files, entry, limits, env, allowed_hosts], kv_binding) in rows {
        let plain: BTreeMap<String, String> = serde_json::from_str(&secrets)?;
        let deployment = crate::NewDeployment {
            files: serde_json::from_str(&files)?,
            entry,
            limits: serde_json::from_str(&limits)?,
            env: serde_json::from_str(&env)?,
            secrets: plain,
            kv_binding,
            allowed_hosts: serde_json::from_str(&allowed_hosts)?,
        };
        let hash = deployment.content_hash(|name, value| key.digest(name, value));
        let sealed = serde_json::to_string(&key.seal_all(&deployment.secrets))?;
        tx.execute(
            "UPDATE deployments SET secrets = ?1, hash = ?2 WHERE rowid = ?3",
            params![sealed, hash, rowid],
        )?;
    }
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)",
        params![CHECK_KEY, key.seal(CHECK_KEY, CHECK_PLAINTEXT)],
    )?;
    tx.commit()?;
    Ok(())
}

/// Leaves no overwritten plaintext in the files: with `secure_delete` on,
/// checkpoints and empties the WAL, rewrites the database, and empties the
/// WAL again.
fn scrub(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "secure_delete", "ON")?;
    let checkpoint =
        |conn: &Connection| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    checkpoint(conn)?;
    conn.execute_batch("VACUUM")?;
    checkpoint(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let key = NodeKey::generate();
        let sealed = key.seal("API_KEY", "hunter2");
        assert!(sealed.starts_with("v1:") && !sealed.contains("hunter2"));
        assert_ne!(sealed, key.seal("API_KEY", "hunter2"), "nonces repeat");
        assert_eq!(key.open("API_KEY", &sealed).unwrap(), "hunter2");
        assert!(key.open("OTHER", &sealed).is_err());
        assert!(NodeKey::generate().open("API_KEY", &sealed).is_err());
        assert!(key.open("API_KEY", "hunter2").is_err());
    }

    #[test]
    fn key_files_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::create(&path).unwrap();
        assert!(NodeKey::create(&path).is_err(), "overwrote a key");
        let loaded = NodeKey::load(&path).unwrap();
        assert_eq!(loaded.open("x", &key.seal("x", "v")).unwrap(), "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(NodeKey::load(&path), Err(StoreError::Key(_))));
    }
}
