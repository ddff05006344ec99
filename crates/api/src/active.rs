//! The active deployment of each function, cached in memory.
//!
//! An invocation takes an `Arc` of the active source when it starts and runs
//! on it to the end, so activating another deployment never disturbs
//! invocations in flight. After a change, the previous version's warm
//! instances are evicted from the invoker.

use crate::ApiError;
use isola_core::{FunctionSource, Invoker};
use isola_store::{DeploymentInfo, Registry};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A function's active deployment, ready to run.
pub struct Active {
    /// The deployment.
    pub deployment: DeploymentInfo,
    /// Its code and configuration.
    pub source: Arc<FunctionSource>,
}

/// Active deployments by function name.
pub struct ActiveFunctions {
    registry: Arc<dyn Registry>,
    invoker: Arc<dyn Invoker>,
    cache: RwLock<HashMap<String, Arc<Active>>>,
    /// Serialises refreshes, so the cache never goes back to an older state.
    refresh: tokio::sync::Mutex<()>,
}

impl ActiveFunctions {
    /// An empty cache over `registry`.
    pub fn new(registry: Arc<dyn Registry>, invoker: Arc<dyn Invoker>) -> Self {
        Self {
            registry,
            invoker,
            cache: RwLock::default(),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The function's active deployment.
    pub async fn get(&self, name: &str) -> Result<Arc<Active>, ApiError> {
        if let Some(active) = self.cache.read().unwrap().get(name) {
            return Ok(active.clone());
        }
        self.refresh(name).await?.ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "no_active_deployment",
                format!("function {name:?} has no active deployment: deploy it first"),
            )
        })
    }

    /// Reloads the function's active deployment from the registry, and
    /// evicts the warm instances of the one it replaces.
    pub async fn refresh(&self, name: &str) -> Result<Option<Arc<Active>>, ApiError> {
        let _serialised = self.refresh.lock().await;
        let current = match self.registry.active_source(name).await {
            Ok(found) => found.map(|(deployment, source)| {
                Arc::new(Active {
                    deployment,
                    source: Arc::new(source),
                })
            }),
            Err(isola_store::StoreError::NotFound(_)) => None,
            Err(error) => return Err(error.into()),
        };
        let previous = {
            let mut cache = self.cache.write().unwrap();
            match &current {
                Some(active) => cache.insert(name.to_string(), active.clone()),
                None => cache.remove(name),
            }
        };
        if let Some(previous) = previous {
            let replaced = current
                .as_ref()
                .is_none_or(|c| c.source.id != previous.source.id);
            if replaced {
                self.invoker.evict(&previous.source.id);
            }
        }
        Ok(current)
    }
}
