//! Where a worker finds the deployments invocations name: the registry
//! the nodes share, with the deployments it loaded kept by id.
//!
//! A deployment's id names its content (code, settings and secrets): a
//! new deploy or a changed secret is a new id. A kept deployment is let go
//! as soon as the registry says its function changed (deleted, or another
//! deployment activated), so only active deployments run here.

use crate::Deployments;
use async_trait::async_trait;
use isola_core::FunctionSource;
use isola_store::Registry;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Deployments loaded through a node's registry, the last
/// [`RegistryDeployments::KEPT`] of them kept, at most
/// [`RegistryDeployments::KEPT_BYTES`] of files together.
pub struct RegistryDeployments {
    registry: Arc<dyn Registry>,
    kept: Mutex<lru::LruCache<String, Arc<FunctionSource>>>,
}

impl RegistryDeployments {
    /// How many loaded deployments are kept.
    pub const KEPT: usize = 64;

    /// Most bytes of files the kept deployments hold together.
    pub const KEPT_BYTES: usize = 256 << 20;

    /// Loads deployments through `registry`, following its changes (on
    /// the current tokio runtime).
    pub fn new(registry: Arc<dyn Registry>) -> Arc<Self> {
        let kept = NonZeroUsize::new(Self::KEPT).expect("KEPT is not zero");
        let changes = registry.watch();
        let this = Arc::new(Self {
            registry,
            kept: Mutex::new(lru::LruCache::new(kept)),
        });
        tokio::spawn(forget_changed(Arc::downgrade(&this), changes));
        this
    }
}

/// Lets go of the kept deployments of each function that changes (all of
/// them if changes were missed), until `deployments` is dropped.
async fn forget_changed(
    deployments: std::sync::Weak<RegistryDeployments>,
    mut changes: tokio::sync::broadcast::Receiver<isola_store::Changed>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let changed = changes.recv().await;
        let Some(deployments) = deployments.upgrade() else {
            return;
        };
        let mut kept = deployments.kept.lock().unwrap();
        match changed {
            Ok(changed) => {
                let gone: Vec<String> = kept
                    .iter()
                    .filter(|(_, source)| source.name == changed.function)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    kept.pop(&id);
                }
            }
            Err(RecvError::Lagged(_)) => kept.clear(),
            Err(RecvError::Closed) => return,
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
        let mut kept = self.kept.lock().unwrap();
        kept.put(deployment.to_string(), source.clone());
        // The least recently used go first while the files are too many.
        let size =
            |source: &FunctionSource| source.files.iter().map(|f| f.code.len()).sum::<usize>();
        while kept.len() > 1 && kept.iter().map(|(_, s)| size(s)).sum::<usize>() > Self::KEPT_BYTES
        {
            kept.pop_lru();
        }
        drop(kept);
        Some(source)
    }
}
