//! Where a worker finds the deployments invocations name: the registry
//! the nodes share, with the deployments it loaded kept by id.
//!
//! A deployment's id names its content (code, settings and secrets), so a
//! kept one never goes stale: a new deploy or a changed secret is a new id.

use crate::Deployments;
use async_trait::async_trait;
use isola_core::FunctionSource;
use isola_store::Registry;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Deployments loaded through a node's registry, the last
/// [`RegistryDeployments::KEPT`] of them kept.
pub struct RegistryDeployments {
    registry: Arc<dyn Registry>,
    kept: Mutex<lru::LruCache<String, Arc<FunctionSource>>>,
}

impl RegistryDeployments {
    /// How many loaded deployments are kept.
    pub const KEPT: usize = 64;

    /// Loads deployments through `registry`.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        let kept = NonZeroUsize::new(Self::KEPT).expect("KEPT is not zero");
        Self {
            registry,
            kept: Mutex::new(lru::LruCache::new(kept)),
        }
    }
}

#[async_trait]
impl Deployments for RegistryDeployments {
    async fn find(&self, function: &str, deployment: &str) -> Option<Arc<FunctionSource>> {
        if let Some(kept) = self.kept.lock().unwrap().get(deployment) {
            if kept.name == function {
                return Some(kept.clone());
            }
        }
        // Only the active deployment is served: an invocation sent just
        // before a deploy or rollback is answered "retry" by the caller.
        let (_, source) = match self.registry.active_source(function).await {
            Ok(found) => found?,
            Err(error) => {
                tracing::warn!(%error, function, "could not load a deployment");
                return None;
            }
        };
        if source.id != deployment {
            return None;
        }
        let source = Arc::new(source);
        self.kept
            .lock()
            .unwrap()
            .put(deployment.to_string(), source.clone());
        Some(source)
    }
}
