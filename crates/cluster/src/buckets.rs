//! The JetStream buckets the cluster's registry keeps, created on first
//! use in a way nats-server 2.9 (Debian's) accepts: async-nats's own KV
//! bucket creation asks the server for account fields it does not send
//! (see ../shared/NATS.md), so a bucket's stream is made as that call
//! would make it, then opened.

use crate::registry::shared;
use async_nats::jetstream::{self, kv, object_store::ObjectStore, stream};
use futures::StreamExt;
use isola_store::{Changed, Result, StoreError};
use std::time::Duration;

/// The registry's buckets.
pub(crate) struct Buckets {
    pub functions: kv::Store,
    pub deployments: kv::Store,
    pub settings: kv::Store,
    pub bundles: ObjectStore,
}

/// Largest value in a KV bucket: a deployment's record (its files are in
/// the object store).
pub(crate) const MAX_VALUE: i32 = 512 << 10;

impl Buckets {
    pub async fn open(client: async_nats::Client) -> Result<Self> {
        let js = jetstream::new(client);
        Ok(Self {
            functions: key_value(&js, "isola_functions").await?,
            deployments: key_value(&js, "isola_deployments").await?,
            settings: key_value(&js, "isola_settings").await?,
            bundles: object_store(&js, "isola_bundles").await?,
        })
    }

    /// The names of every function.
    pub async fn function_names(&self) -> Result<Vec<String>> {
        let mut keys = self.functions.keys().await.map_err(shared)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(shared)?);
        }
        Ok(names)
    }

    /// The bytes of object `key` of the bundles.
    pub async fn files(&self, key: &str) -> Result<Vec<u8>> {
        use async_nats::jetstream::object_store::GetErrorKind;
        use tokio::io::AsyncReadExt;
        let mut object = self
            .bundles
            .get(key)
            .await
            .map_err(|error| match error.kind() {
                GetErrorKind::NotFound => {
                    StoreError::NotFound(format!("the files of deployment {key}"))
                }
                _ => shared(error),
            })?;
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(shared)?;
        Ok(bytes)
    }

    /// Tells `changes` of every change of a function made by any node,
    /// for as long as the process runs (watching again after a failure).
    pub async fn follow_functions(
        &self,
        changes: tokio::sync::broadcast::Sender<Changed>,
    ) -> Result<()> {
        let functions = self.functions.clone();
        let mut watch = functions.watch_all().await.map_err(shared)?;
        tokio::spawn(async move {
            loop {
                while let Some(Ok(entry)) = watch.next().await {
                    let _ = changes.send(Changed {
                        function: entry.key,
                    });
                }
                tracing::warn!("the watch of the shared functions ended: watching again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                match functions.watch_all().await {
                    Ok(again) => watch = again,
                    Err(error) => {
                        tracing::warn!(%error, "could not watch the shared functions");
                        continue;
                    }
                }
                // What changed meanwhile was not seen: every function may
                // have changed.
                if let Ok(mut keys) = functions.keys().await {
                    while let Some(Ok(function)) = keys.next().await {
                        let _ = changes.send(Changed { function });
                    }
                }
            }
        });
        Ok(())
    }
}

/// Opens KV bucket `bucket`, creating its stream if there is none.
pub(crate) async fn key_value(js: &jetstream::Context, bucket: &str) -> Result<kv::Store> {
    key_value_with(js, bucket, |_| {}).await
}

/// Opens KV bucket `bucket`, creating its stream if there is none, as
/// [`key_value`] does with `tune` applied to the stream's configuration
/// (an age or size limit).
pub(crate) async fn key_value_with(
    js: &jetstream::Context,
    bucket: &str,
    tune: impl FnOnce(&mut stream::Config),
) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let mut config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: MAX_VALUE,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    tune(&mut config);
    js.get_or_create_stream(config).await.map_err(shared)?;
    js.get_key_value(bucket).await.map_err(shared)
}

/// Opens object store `bucket`, creating it if there is none.
pub(crate) async fn object_store(js: &jetstream::Context, bucket: &str) -> Result<ObjectStore> {
    if let Ok(store) = js.get_object_store(bucket).await {
        return Ok(store);
    }
    let config = jetstream::object_store::Config {
        bucket: bucket.to_string(),
        ..Default::default()
    };
    js.create_object_store(config).await.map_err(shared)
}
