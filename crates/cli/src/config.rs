//! The CLI's config file, written by `isola login`: `$ISOLA_CONFIG`, or
//! `$XDG_CONFIG_HOME/isola/config.json`, or `~/.config/isola/config.json`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `isola login` remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// Server URL.
    pub server: Option<String>,
    /// Admin token.
    pub token: Option<String>,
}

impl Config {
    /// Where the file lives.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("ISOLA_CONFIG") {
            return Some(PathBuf::from(path));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
        Some(base.join("isola").join("config.json"))
    }

    /// Reads the file, if there is one.
    pub fn load() -> anyhow::Result<Self> {
        let Some(path) = Self::path() else {
            return Ok(Self::default());
        };
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes the file, readable by its owner only.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Self::path()
            .ok_or_else(|| anyhow::anyhow!("no config location: set HOME or ISOLA_CONFIG"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(path)
    }
}
