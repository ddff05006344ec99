//! The registry of a cluster on NATS JetStream: functions, deployments and
//! settings shared by every node, beside the embedded SQLite one.
//!
//! - KV `isola_functions`: a function's name → its creation time, active
//!   version and next version number. Every change is a compare-and-set on
//!   its revision, and every node watches the bucket (`Registry::watch`).
//! - KV `isola_deployments`: `<name>.v<version>` → the deployment's record
//!   and its secrets, sealed with the node key (the nodes of a cluster
//!   share it).
//! - Object store `isola_bundles`: `<name>.v<version>` → its files (any
//!   size: objects are sent in chunks).
//! - KV `isola_settings`: the admin token's hash and other settings.
//!
//! A deploy first takes its version number (a compare-and-set on the
//! function), then writes the files and the record, and only then
//! activates it (a second compare-and-set): two deploys at once get two
//! versions, and no node sees an active version whose files are not there.
//!
//! Invocation records and console lines are kept in each gateway's own
//! SQLite registry (`records`): a gateway publishes the records it makes
//! on `isola.records`, and every gateway that receives them
//! ([`JetStreamRegistry::receive_records`]) stores them, so any gateway
//! shows every invocation. Records made while a gateway was down are not
//! sent again to it (records may be lost; deployments may not).

use crate::buckets::Buckets;
use async_trait::async_trait;
use isola_core::{FunctionSource, SourceFile};
use isola_store::{
    validate_function_name, Changed, DeploymentInfo, FunctionInfo, InvocationRecord, LogRecord,
    NewDeployment, NodeKey, Pruned, Registry, Result, Retention, StoreError,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A function as the shared store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFunction {
    created_at: i64,
    active_version: Option<u32>,
    next_version: u32,
}

/// A deployment's record, with its secrets sealed.
#[derive(Debug, Serialize, Deserialize)]
struct StoredDeployment {
    info: DeploymentInfo,
    secrets: BTreeMap<String, String>,
}

/// The registry of a cluster: see the module's documentation.
pub struct JetStreamRegistry {
    client: async_nats::Client,
    /// This registry's mark on the records it publishes (it stores its
    /// own records itself, not on their way back).
    origin: String,
    buckets: Buckets,
    key: NodeKey,
    records: Arc<dyn Registry>,
    changes: tokio::sync::broadcast::Sender<Changed>,
}

impl JetStreamRegistry {
    /// Opens (creating them if needed) the shared buckets through `client`;
    /// secrets are sealed with `key`, records kept in `records`.
    pub async fn open(
        client: async_nats::Client,
        key: NodeKey,
        records: Arc<dyn Registry>,
    ) -> Result<Self> {
        let buckets = Buckets::open(client.clone()).await?;
        let (changes, _) = tokio::sync::broadcast::channel(isola_store::WATCH_CAPACITY);
        buckets.follow_functions(changes.clone()).await?;
        Ok(Self {
            origin: client.new_inbox(),
            client,
            buckets,
            key,
            records,
            changes,
        })
    }

    async fn stored_function(&self, name: &str) -> Result<(StoredFunction, u64)> {
        let entry = self.buckets.functions.entry(name).await.map_err(shared)?;
        match entry {
            Some(entry) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                Ok((serde_json::from_slice(&entry.value)?, entry.revision))
            }
            _ => Err(StoreError::NotFound(format!("function {name:?}"))),
        }
    }

    /// Changes the function `name` with `change` by compare-and-set,
    /// retrying while other nodes change it meanwhile.
    async fn change_function<T>(
        &self,
        name: &str,
        change: impl Fn(&mut StoredFunction) -> Result<T>,
    ) -> Result<T> {
        loop {
            let (mut function, revision) = self.stored_function(name).await?;
            let out = change(&mut function)?;
            let value = serde_json::to_vec(&function)?.into();
            match self.buckets.functions.update(name, value, revision).await {
                Ok(_) => return Ok(out),
                Err(error)
                    if error.kind()
                        == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {}
                Err(error) => return Err(shared(error)),
            }
        }
    }

    async fn stored_deployment(&self, name: &str, version: u32) -> Result<StoredDeployment> {
        let found = self
            .buckets
            .deployments
            .get(deployment_key(name, version))
            .await
            .map_err(shared)?;
        let found = found.ok_or_else(|| {
            StoreError::NotFound(format!("deployment {version} of function {name:?}"))
        })?;
        Ok(serde_json::from_slice(&found)?)
    }

    /// Stores the records every gateway publishes, for as long as the
    /// process runs (this node's own included: it stores them on receipt).
    pub async fn receive_records(&self) -> Result<()> {
        let mut batches = self
            .client
            .subscribe(RECORDS_SUBJECT)
            .await
            .map_err(shared)?;
        let records = self.records.clone();
        let origin = self.origin.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(message) = batches.next().await {
                let from = message.headers.as_ref().and_then(|h| h.get(ORIGIN_HEADER));
                if from.is_some_and(|from| from.as_str() == origin) {
                    continue;
                }
                let Ok(batch) = serde_json::from_slice::<Vec<InvocationRecord>>(&message.payload)
                else {
                    continue;
                };
                if let Err(error) = store_locally(&*records, batch).await {
                    tracing::warn!(%error, "could not store the cluster's invocation records");
                }
            }
        });
        Ok(())
    }

    fn changed(&self, name: &str) {
        let _ = self.changes.send(Changed {
            function: name.to_string(),
        });
    }
}

/// The subject gateways publish their invocation records on.
const RECORDS_SUBJECT: &str = "isola.records";

/// Most bytes of records in one published batch.
const RECORDS_BATCH_BYTES: usize = 256 << 10;

/// The header naming the registry that published a batch of records.
const ORIGIN_HEADER: &str = "Isola-Origin";

/// Stores `batch` in this node's own registry, which keeps records of the
/// functions it knows: it learns of each shared one as it first records it.
async fn store_locally(records: &dyn Registry, batch: Vec<InvocationRecord>) -> Result<()> {
    let mut names: Vec<&str> = batch.iter().map(|r| r.function.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if let Err(StoreError::NotFound(_)) = records.function(name).await {
            match records.create_function(name).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
    }
    records.record_invocations(batch).await
}

/// The key of version `version` of `name`'s deployments and files.
fn deployment_key(name: &str, version: u32) -> String {
    format!("{name}.v{version}")
}

pub(crate) fn shared(error: impl std::fmt::Display) -> StoreError {
    StoreError::Shared(error.to_string())
}

/// Publishes `records` (as from `origin`) for every gateway to store, and
/// waits until the server has them. Records too large for one message go
/// without their lines.
pub(crate) async fn publish_records(
    client: &async_nats::Client,
    origin: &str,
    records: &[InvocationRecord],
) -> Result<()> {
    let most = client
        .server_info()
        .max_payload
        .saturating_sub(crate::HEADERS_ROOM);
    let mut batch = serde_json::to_vec(records)?;
    if batch.len() > most {
        let trimmed: Vec<InvocationRecord> = records
            .iter()
            .cloned()
            .map(|mut record| {
                record.logs.clear();
                record
            })
            .collect();
        batch = serde_json::to_vec(&trimmed)?;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ORIGIN_HEADER, origin);
    client
        .publish_with_headers(RECORDS_SUBJECT, headers, batch.into())
        .await
        .map_err(shared)?;
    client.flush().await.map_err(shared)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn info_of(name: &str, function: &StoredFunction) -> FunctionInfo {
    FunctionInfo {
        name: name.to_string(),
        created_at: function.created_at,
        active_version: function.active_version,
    }
}

#[async_trait]
impl Registry for JetStreamRegistry {
    fn watch(&self) -> tokio::sync::broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    async fn create_function(&self, name: &str) -> Result<FunctionInfo> {
        validate_function_name(name)?;
        let function = StoredFunction {
            created_at: now_ms(),
            active_version: None,
            next_version: 1,
        };
        let value = serde_json::to_vec(&function)?.into();
        match self.buckets.functions.create(name, value).await {
            Ok(_) => {}
            Err(error)
                if error.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists =>
            {
                return Err(StoreError::Conflict(format!("function {name:?}")));
            }
            Err(error) => return Err(shared(error)),
        }
        self.changed(name);
        Ok(info_of(name, &function))
    }

    async fn function(&self, name: &str) -> Result<FunctionInfo> {
        let (function, _) = self.stored_function(name).await?;
        Ok(info_of(name, &function))
    }

    async fn functions(&self) -> Result<Vec<FunctionInfo>> {
        let mut found = Vec::new();
        for name in self.buckets.function_names().await? {
            // One deleted meanwhile is left out.
            if let Ok(info) = self.function(&name).await {
                found.push(info);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn delete_function(&self, name: &str) -> Result<()> {
        let (function, _) = self.stored_function(name).await?;
        self.buckets.functions.delete(name).await.map_err(shared)?;
        self.changed(name);
        // Then what it held; a failure here leaves unreachable data only.
        for version in 1..function.next_version {
            let key = deployment_key(name, version);
            let _ = self.buckets.deployments.purge(&key).await;
            let _ = self.buckets.bundles.delete(&key).await;
        }
        match self.records.delete_function(name).await {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn create_deployment(
        &self,
        name: &str,
        deployment: NewDeployment,
        activate: bool,
    ) -> Result<DeploymentInfo> {
        deployment.validate()?;
        // Checked before a version is taken: the record (settings and
        // sealed secrets, not the files) must fit in one KV value.
        let sealed = self.key.seal_all(&deployment.secrets);
        let hash = self.deployment_hash(&deployment);
        let estimate = StoredDeployment {
            info: DeploymentInfo::of(name, u32::MAX, hash.clone(), &deployment, now_ms()),
            secrets: sealed.clone(),
        };
        let size = serde_json::to_vec(&estimate)?.len();
        let most = crate::buckets::MAX_VALUE as usize - 1024;
        if size > most {
            return Err(StoreError::Invalid(format!(
                "the deployment's settings and secrets take {size} bytes; at most {most} fit"
            )));
        }
        let version = self
            .change_function(name, |function| {
                function.next_version += 1;
                Ok(function.next_version - 1)
            })
            .await?;
        let key = deployment_key(name, version);
        let info = DeploymentInfo::of(name, version, hash, &deployment, now_ms());
        let files = serde_json::to_vec(&deployment.files)?;
        self.buckets
            .bundles
            .put(key.as_str(), &mut files.as_slice())
            .await
            .map_err(shared)?;
        let stored = StoredDeployment {
            info: info.clone(),
            secrets: sealed,
        };
        let value = serde_json::to_vec(&stored)?.into();
        self.buckets
            .deployments
            .put(&key, value)
            .await
            .map_err(shared)?;
        if activate {
            return self.activate(name, version).await;
        }
        Ok(info)
    }

    fn deployment_hash(&self, deployment: &NewDeployment) -> String {
        deployment.content_hash(|name, value| self.key.digest(name, value))
    }

    async fn deployments(&self, name: &str) -> Result<Vec<DeploymentInfo>> {
        let (function, _) = self.stored_function(name).await?;
        let mut found = Vec::new();
        for version in (1..function.next_version).rev() {
            // A version taken by a deploy that failed has no record.
            match self.stored_deployment(name, version).await {
                Ok(stored) => {
                    let mut info = stored.info;
                    info.active = function.active_version == Some(version);
                    found.push(info);
                }
                Err(StoreError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(found)
    }

    async fn activate(&self, name: &str, version: u32) -> Result<DeploymentInfo> {
        let mut info = self.stored_deployment(name, version).await?.info;
        self.change_function(name, |function| {
            // A record left by a deleted function of the same name is not
            // this function's.
            if version >= function.next_version {
                return Err(StoreError::NotFound(format!(
                    "deployment {version} of function {name:?}"
                )));
            }
            function.active_version = Some(version);
            Ok(())
        })
        .await?;
        self.changed(name);
        info.active = true;
        Ok(info)
    }

    async fn active_source(&self, name: &str) -> Result<Option<(DeploymentInfo, FunctionSource)>> {
        let (function, _) = self.stored_function(name).await?;
        let Some(version) = function.active_version else {
            return Ok(None);
        };
        let stored = self.stored_deployment(name, version).await?;
        let files = self.buckets.files(&deployment_key(name, version)).await?;
        let files: Vec<SourceFile> = serde_json::from_slice(&files)?;
        let mut info = stored.info;
        info.active = true;
        // The only place secrets are opened: for running the function.
        let source = info.source(files, self.key.open_all(stored.secrets)?);
        Ok(Some((info, source)))
    }

    async fn record_invocations(&self, records: Vec<InvocationRecord>) -> Result<()> {
        // Stored here first, then published in batches of bounded size for
        // the other gateways (a record too large for a batch stays here).
        let most = RECORDS_BATCH_BYTES.min(
            self.client
                .server_info()
                .max_payload
                .saturating_sub(crate::HEADERS_ROOM),
        );
        let mut batches = Vec::new();
        let mut batch: Vec<u8> = b"[".to_vec();
        for record in &records {
            let json = serde_json::to_vec(record)?;
            if json.len() + 2 > most {
                continue;
            }
            if batch.len() + json.len() + 2 > most {
                batches.push(std::mem::replace(&mut batch, b"[".to_vec()));
            }
            if batch.len() > 1 {
                batch.push(b',');
            }
            batch.extend_from_slice(&json);
        }
        if batch.len() > 1 {
            batches.push(batch);
        }
        store_locally(&*self.records, records).await?;
        for mut batch in batches {
            batch.push(b']');
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(ORIGIN_HEADER, self.origin.as_str());
            if let Err(error) = self
                .client
                .publish_with_headers(RECORDS_SUBJECT, headers, batch.into())
                .await
            {
                tracing::warn!(%error, "could not share invocation records");
            }
        }
        Ok(())
    }

    async fn invocations(&self, name: &str, limit: u32) -> Result<Vec<InvocationRecord>> {
        self.function(name).await?;
        match self.records.invocations(name, limit).await {
            Err(StoreError::NotFound(_)) => Ok(Vec::new()),
            found => found,
        }
    }

    async fn logs(&self, name: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>> {
        self.function(name).await?;
        match self.records.logs(name, after, limit).await {
            Err(StoreError::NotFound(_)) => Ok(Vec::new()),
            found => found,
        }
    }

    async fn prune(&self, retention: &Retention) -> Result<Pruned> {
        self.records.prune(retention).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let found = self.buckets.settings.get(key).await.map_err(shared)?;
        found
            .map(|value| String::from_utf8(value.to_vec()).map_err(shared))
            .transpose()
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let value = value.as_bytes().to_vec().into();
        self.buckets
            .settings
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(shared)
    }
}
