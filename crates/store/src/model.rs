//! The records the registry keeps.

use crate::{Result, StoreError};
use isola_core::{Limits, LogEntry, SourceFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A function: a name and, once deployed, an active deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Unique name, usable as a DNS label.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Version of the active deployment.
    pub active_version: Option<u32>,
}

/// What a new deployment holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeployment {
    /// Module files.
    pub files: Vec<SourceFile>,
    /// Path of the entry module among the files.
    pub entry: String,
    /// Limits for each invocation.
    #[serde(default)]
    pub limits: Limits,
    /// Environment variables (readable back).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets (write-only: never returned).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Name of the function's KV namespace in `env` (e.g. `KV`), if any.
    #[serde(default)]
    pub kv_binding: Option<String>,
    /// Private addresses or CIDR ranges the function may fetch.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl NewDeployment {
    /// Checks what can be checked without running the code.
    pub fn validate(&self) -> Result<()> {
        if self.files.is_empty() {
            return Err(StoreError::Invalid(
                "a deployment needs at least one file".into(),
            ));
        }
        if !self.files.iter().any(|f| f.path == self.entry) {
            return Err(StoreError::Invalid(format!(
                "the entry module {:?} is not among the files",
                self.entry
            )));
        }
        for file in &self.files {
            let bad = file.path.is_empty()
                || file.path.starts_with('/')
                || file
                    .path
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..");
            if bad {
                return Err(StoreError::Invalid(format!(
                    "invalid file path {:?}",
                    file.path
                )));
            }
        }
        if self
            .files
            .iter()
            .all(|f| f.code.iter().all(u8::is_ascii_whitespace))
        {
            return Err(StoreError::Invalid("the deployment's code is empty".into()));
        }
        if let Some(binding) = &self.kv_binding {
            let valid = binding
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && binding
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(StoreError::Invalid(format!(
                    "invalid KV binding name {binding:?}"
                )));
            }
        }
        for host in &self.allowed_hosts {
            let valid = host.parse::<std::net::IpAddr>().is_ok()
                || host.split_once('/').is_some_and(|(ip, len)| {
                    ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()
                });
            if !valid {
                return Err(StoreError::Invalid(format!(
                    "allowed host {host:?} is not an IP address or CIDR range"
                )));
            }
        }
        for key in self.env.keys().chain(self.secrets.keys()) {
            let valid =
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(StoreError::Invalid(format!(
                    "invalid variable name {key:?}"
                )));
            }
        }
        self.limits.validate().map_err(StoreError::Invalid)
    }

    /// SHA-256 over the files, entry, limits and variables, with each
    /// secret value replaced by `digest(name, value)`: a keyed digest, so
    /// that the hash (stored, and shown by the API) cannot be used to test
    /// guesses of a secret, while deployments whose secrets differ still
    /// hash differently.
    pub fn content_hash(&self, digest: impl Fn(&str, &str) -> String) -> String {
        use sha2::{Digest, Sha256};
        let mut hashed = self.clone();
        for (name, value) in hashed.secrets.iter_mut() {
            *value = digest(name, value);
        }
        let canonical = serde_json::to_vec(&hashed).expect("deployments serialise");
        hex::encode(Sha256::digest(&canonical))
    }
}

/// A stored deployment, as the API shows it (secret values left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    /// The function it belongs to.
    pub function: String,
    /// Version number, from 1, per function.
    pub version: u32,
    /// Content hash (SHA-256, hex).
    pub hash: String,
    /// Entry module.
    pub entry: String,
    /// Paths of its files.
    pub files: Vec<String>,
    /// Limits.
    pub limits: Limits,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Names of its secrets.
    pub secret_names: Vec<String>,
    /// Name of its KV binding in `env`, if any.
    #[serde(default)]
    pub kv_binding: Option<String>,
    /// Private addresses or ranges it may fetch.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Which runtime runs it, told by its entry file.
    #[serde(default)]
    pub runtime: isola_core::RuntimeKind,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Whether it is the function's active deployment.
    pub active: bool,
}

impl DeploymentInfo {
    /// The record of `deployment`, stored as `version` of `function` with
    /// content hash `hash`.
    pub fn of(
        function: &str,
        version: u32,
        hash: String,
        deployment: &NewDeployment,
        created_at: i64,
    ) -> Self {
        let runtime = deployment
            .files
            .iter()
            .find(|f| f.path == deployment.entry)
            .map_or(isola_core::RuntimeKind::Js, |f| {
                isola_core::RuntimeKind::detect(&f.code)
            });
        Self {
            function: function.to_string(),
            version,
            hash,
            entry: deployment.entry.clone(),
            files: deployment.files.iter().map(|f| f.path.clone()).collect(),
            limits: deployment.limits,
            env: deployment.env.clone(),
            secret_names: deployment.secrets.keys().cloned().collect(),
            kv_binding: deployment.kv_binding.clone(),
            allowed_hosts: deployment.allowed_hosts.clone(),
            runtime,
            created_at,
            active: false,
        }
    }

    /// What runs this deployment: its `files`, and its variables with its
    /// `secrets` (opened) among them.
    pub fn source(
        &self,
        files: Vec<SourceFile>,
        secrets: BTreeMap<String, String>,
    ) -> isola_core::FunctionSource {
        let mut env = self.env.clone();
        env.extend(secrets);
        isola_core::FunctionSource {
            id: self.instance_key(),
            name: self.function.clone(),
            entry: self.entry.clone(),
            files,
            limits: self.limits,
            env,
            kv_binding: self.kv_binding.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            runtime: self.runtime,
        }
    }

    /// The executor's key for this deployment's isolates.
    pub fn instance_key(&self) -> String {
        Self::key_for(&self.function, &self.hash)
    }

    /// The executor's key for a function's deployment with content `hash`:
    /// identical content shares warm instances.
    pub fn key_for(function: &str, hash: &str) -> String {
        format!("{function}:{}", &hash[..16.min(hash.len())])
    }
}

impl InvocationRecord {
    /// The record of invocation `id` of deployment `version` of
    /// `function`, begun at `created_at`, that ended with `outcome` and
    /// printed `logs`. A failure's message and stack are kept in the
    /// record and as an `error` line of its logs (the public caller only
    /// saw a bare 500).
    pub fn finished(
        (id, function, version): (&str, &str, u32),
        created_at: i64,
        outcome: &isola_core::Outcome,
        mut logs: Vec<LogEntry>,
    ) -> Self {
        let error = outcome.result.as_ref().err();
        let error_message = error.map(isola_core::FunctionError::detail);
        if let (Some(error), Some(detail)) = (error, &error_message) {
            logs.push(LogEntry {
                level: isola_core::LogLevel::Error,
                message: format!("{}: {detail}", error.code),
            });
        }
        Self {
            id: id.to_string(),
            function: function.to_string(),
            version,
            status: if error.is_none() { "ok" } else { "error" }.into(),
            error_code: error.map(|e| e.code.as_str().to_string()),
            error_message,
            duration_us: outcome.metrics.duration_us,
            cpu_us: outcome.metrics.cpu_us,
            peak_heap_bytes: outcome.metrics.peak_heap_bytes,
            cold_start: outcome.metrics.cold_start,
            created_at,
            request: None,
            websocket: None,
            logs,
        }
    }
}

/// One invocation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Invocation id.
    pub id: String,
    /// Function name.
    pub function: String,
    /// Deployment version it ran on.
    pub version: u32,
    /// `ok` or `error`.
    pub status: String,
    /// The error code, when it failed.
    pub error_code: Option<String>,
    /// The error's message and stack, when it failed (for the owner: the
    /// public only ever saw a bare 500).
    #[serde(default)]
    pub error_message: Option<String>,
    /// Wall time, microseconds.
    pub duration_us: u64,
    /// CPU time, microseconds.
    pub cpu_us: u64,
    /// Heap in use at the end, bytes.
    pub peak_heap_bytes: u64,
    /// Whether it started a new isolate.
    pub cold_start: bool,
    /// Start time, Unix milliseconds.
    pub created_at: i64,
    /// The HTTP request it answered, if it was one.
    #[serde(default)]
    pub request: Option<RequestLine>,
    /// The WebSocket connection it accepted, if it did: the record is
    /// written when the connection ends, its duration and CPU time the
    /// connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<SocketStats>,
    /// Console output (stored in the logs, not returned with the record).
    #[serde(skip)]
    pub logs: Vec<LogEntry>,
}

/// What went over a WebSocket connection, in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStats {
    /// Messages the client sent.
    pub messages_in: u64,
    /// Messages the function sent.
    pub messages_out: u64,
    /// Bytes of the client's messages.
    pub bytes_in: u64,
    /// Bytes of the function's messages.
    pub bytes_out: u64,
    /// The code the connection closed with.
    pub close_code: u16,
}

/// What an HTTP invocation was asked and answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLine {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path and query asked for (at most 256 bytes kept).
    pub path: String,
    /// The status answered, when the function answered.
    pub status: Option<u16>,
}

/// One console line, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Sequence number, increasing.
    pub seq: i64,
    /// Function name.
    pub function: String,
    /// Invocation that printed it.
    pub invocation_id: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
    /// Time, Unix milliseconds.
    pub created_at: i64,
}

/// Checks a function name: 1–63 characters of `a-z`, `0-9` and `-`,
/// starting with a letter or digit (a DNS label).
pub fn validate_function_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid function name {name:?}: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(files: &[(&str, &str)], entry: &str) -> NewDeployment {
        NewDeployment {
            files: files
                .iter()
                .map(|(p, c)| SourceFile {
                    path: p.to_string(),
                    code: c.as_bytes().to_vec(),
                })
                .collect(),
            entry: entry.into(),
            limits: Limits::default(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            kv_binding: None,
            allowed_hosts: Vec::new(),
        }
    }

    #[test]
    fn names_must_be_dns_labels() {
        for good in ["hello", "hello-world", "a1", "9lives"] {
            assert!(validate_function_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Hello", "-x", "x-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_function_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deployments_are_checked_before_storing() {
        assert!(
            deployment(&[("main.js", "export default () => 1")], "main.js")
                .validate()
                .is_ok()
        );
        assert!(deployment(&[], "main.js").validate().is_err());
        assert!(deployment(&[("main.js", "x")], "other.js")
            .validate()
            .is_err());
        assert!(deployment(&[("main.js", "   ")], "main.js")
            .validate()
            .is_err());
        assert!(deployment(&[("../main.js", "x")], "../main.js")
            .validate()
            .is_err());
        assert!(deployment(&[("/abs.js", "x")], "/abs.js")
            .validate()
            .is_err());
        let mut bad_env = deployment(&[("main.js", "x")], "main.js");
        bad_env.env.insert("NO SPACES".into(), "v".into());
        assert!(bad_env.validate().is_err());
    }

    #[test]
    fn content_hash_covers_code_and_config() {
        let digest = |name: &str, value: &str| format!("{name}:{}", value.len());
        let a = deployment(&[("main.js", "export default () => 1")], "main.js");
        let mut b = a.clone();
        assert_eq!(a.content_hash(digest), b.content_hash(digest));
        b.limits.cpu_ms = 7;
        assert_ne!(a.content_hash(digest), b.content_hash(digest));
        // Secret values count through the digest only.
        let mut c = a.clone();
        c.secrets.insert("KEY".into(), "one".into());
        let mut d = a.clone();
        d.secrets.insert("KEY".into(), "two".into());
        assert_eq!(c.content_hash(digest), d.content_hash(digest));
        assert_ne!(
            c.content_hash(|_, v| v.into()),
            d.content_hash(|_, v| v.into())
        );
    }
}
