//! Compiled modules kept on disk, so that a restarted node does not
//! compile again: wasmtime's serialized artifacts, named by the module's
//! SHA-256 and the engine's compatibility hash (wasmtime version, target,
//! settings), written whole and renamed into place, never changed after.
//!
//! Loading an artifact runs native code it holds, so the folder must be
//! the node's own (the data directory, `0700`): whoever can write there
//! can change the node anyway.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;

/// A folder of compiled modules.
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// The cache in `dir` (made if missing).
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        use sha2::{Digest, Sha256};
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let name = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            compat.finish()
        );
        self.dir.join(name)
    }

    /// The artifact kept for `bytes`, if any: written whole (renamed into
    /// place) by this cache in the node's private folder, and read into
    /// memory, not mapped, so that a file changed underneath cannot fault
    /// the node. wasmtime checks on loading that a compatible engine made it.
    pub fn read(&self, engine: &Engine, bytes: &[u8]) -> Option<Vec<u8>> {
        std::fs::read(self.path(engine, bytes)).ok()
    }

    /// Keeps the artifact of `bytes` (a module's or a component's
    /// `serialize()`); a failure only costs a compilation later.
    pub fn store(&self, engine: &Engine, bytes: &[u8], artifact: wasmtime::Result<Vec<u8>>) {
        let Ok(artifact) = artifact else {
            return;
        };
        let path = self.path(engine, bytes);
        let partial = path.with_extension(format!("part{}", std::process::id()));
        if write_private(&partial, &artifact).is_ok() {
            let _ = std::fs::rename(&partial, &path);
        } else {
            let _ = std::fs::remove_file(&partial);
        }
        self.prune();
    }

    /// Keeps the [`MAX_ARTIFACTS`] newest artifacts; older ones go (a
    /// deployment still in use is compiled again if it needs its own).
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let modified = entry.metadata().ok()?.modified().ok()?;
                Some((modified, entry.path()))
            })
            .collect();
        if files.len() <= MAX_ARTIFACTS {
            return;
        }
        files.sort();
        for (_, path) in &files[..files.len() - MAX_ARTIFACTS] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Artifacts kept on disk, at most.
const MAX_ARTIFACTS: usize = 512;

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
