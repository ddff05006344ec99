//! Where each queued invocation stands, by id: KV bucket
//! `isola_async_results`, written when it is queued and when it has run
//! (or was set aside), read by `GET /v1/functions/<name>/invocations/<id>`.
//! Bounded: an entry is kept a day, the bucket at most 1 GiB (the oldest
//! go first), a result at most `isola_core::queued::MAX_KEPT_OUTPUT`.

use crate::buckets::key_value_with;
use async_nats::jetstream::{self, kv, stream};
use isola_core::{ErrorCode, FunctionError, QueuedInvocation};
use std::time::Duration;

const BUCKET: &str = "isola_async_results";

/// How long a queued invocation's state is kept.
const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// Most bytes the bucket holds.
const MAX_BYTES: i64 = 1 << 30;

fn unavailable(error: impl std::fmt::Display) -> FunctionError {
    FunctionError::new(
        ErrorCode::Unavailable,
        format!("the results of queued invocations are unavailable: {error}"),
    )
}

/// The results bucket.
#[derive(Clone)]
pub(crate) struct Results(kv::Store);

impl Results {
    pub async fn open(js: &jetstream::Context) -> Result<Self, FunctionError> {
        let store = key_value_with(js, BUCKET, |config| {
            config.max_age = KEPT_FOR;
            config.max_bytes = MAX_BYTES;
            config.discard = stream::DiscardPolicy::Old;
        })
        .await
        .map_err(unavailable)?;
        Ok(Self(store))
    }

    /// Writes where `queued` stands.
    pub async fn set(&self, queued: &QueuedInvocation) -> Result<(), FunctionError> {
        let mut value = serde_json::to_vec(queued).map_err(unavailable)?;
        if value.len() > crate::buckets::MAX_VALUE as usize {
            // A huge error (its stack): its first lines are enough.
            let mut smaller = queued.clone();
            if let Some(error) = &mut smaller.error {
                error.stack = None;
                let mut end = error.message.len().min(4096);
                while !error.message.is_char_boundary(end) {
                    end -= 1;
                }
                error.message.truncate(end);
            }
            value = serde_json::to_vec(&smaller).map_err(unavailable)?;
        }
        self.0
            .put(&queued.id, value.into())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Forgets invocation `id` (it was not queued after all).
    pub async fn forget(&self, id: &str) {
        if let Err(error) = self.0.purge(id).await {
            tracing::warn!(%error, id, "could not forget a queued invocation's state");
        }
    }

    /// Where invocation `id` stands, if it is known.
    pub async fn get(&self, id: &str) -> Result<Option<QueuedInvocation>, FunctionError> {
        // Ids are isola's (`inv_` and hex); anything else is no key of ours
        // (and must not reach the server as a subject with wildcards).
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Ok(None);
        }
        let Some(bytes) = self.0.get(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(unavailable)
    }
}
