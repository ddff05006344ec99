//! The active deployment of each function, cached in memory.
//!
//! An invocation takes an `Arc` of the active source when it starts and runs
//! on it to the end, so activating another deployment never disturbs
//! invocations in flight. After a change, the previous version's warm
//! instances are evicted from the invoker.
//!
//! Lookups of names that cannot be functions are refused before any lookup,
//! and names known to have no active deployment are kept in a bounded LRU
//! (every write goes through this node's API, which refreshes the name), so
//! a flood of requests for random names costs one query per name at most.
//! Refreshes are serialised per name: a miss for one name never waits
//! behind another.
//!
//! Changes made elsewhere (another node of a cluster, or the registry used
//! directly) arrive through the registry's watch ([`ActiveFunctions::follow`]):
//! each changed name is refreshed, and a watcher that fell behind forgets
//! everything it caches.

use crate::metrics::{FunctionSeries, Metrics};
use crate::ApiError;
use isola_core::{FunctionSource, Invoker};
use isola_store::{DeploymentInfo, Registry};
use lru::LruCache;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::OwnedMutexGuard;

/// Names remembered as having no active deployment.
const ABSENT_CAPACITY: usize = 10_000;

/// A function's active deployment, ready to run.
pub struct Active {
    /// The deployment.
    pub deployment: DeploymentInfo,
    /// Its code and configuration.
    pub source: Arc<FunctionSource>,
    /// The function's metric series.
    pub series: Arc<FunctionSeries>,
}

type NameLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Active deployments by function name.
pub struct ActiveFunctions {
    registry: Arc<dyn Registry>,
    invoker: Arc<dyn Invoker>,
    metrics: Arc<Metrics>,
    cache: RwLock<HashMap<String, Arc<Active>>>,
    /// Names without an active deployment, most recently asked for first,
    /// and whether the function exists at all.
    absent: Mutex<LruCache<String, bool>>,
    /// One lock per name being refreshed, so the cache never goes back to
    /// an older state; removed when nobody holds or waits for it.
    locks: NameLocks,
}

/// Holds a name's refresh lock; forgets the lock when it was the last user.
struct NameGuard<'a> {
    locks: &'a NameLocks,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap();
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

/// Past this many, and at each doubling, locks nobody uses any more (their
/// waiter gave up) are swept out.
const LOCK_SWEEP_FROM: usize = 1024;

/// The error for a name without an active deployment: no such function,
/// or one not deployed yet.
fn absent_error(name: &str, exists: bool) -> ApiError {
    if exists {
        no_active_deployment(name)
    } else {
        ApiError::not_found(format!(
            "function {name:?} does not exist: create it with `isola functions create {name}`"
        ))
    }
}

fn no_active_deployment(name: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_active_deployment",
        format!("function {name:?} has no active deployment: deploy it first"),
    )
}

impl ActiveFunctions {
    /// An empty cache over `registry`.
    pub fn new(
        registry: Arc<dyn Registry>,
        invoker: Arc<dyn Invoker>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            registry,
            invoker,
            metrics,
            cache: RwLock::default(),
            absent: Mutex::new(LruCache::new(
                NonZeroUsize::new(ABSENT_CAPACITY).expect("non-zero"),
            )),
            locks: Mutex::default(),
        }
    }

    /// The function's active deployment.
    pub async fn get(&self, name: &str) -> Result<Arc<Active>, ApiError> {
        if let Some(found) = self.cached(name)? {
            return Ok(found);
        }
        let _locked = self.lock(name).await;
        // Another lookup of this name may have settled it while we waited.
        if let Some(found) = self.cached(name)? {
            return Ok(found);
        }
        match self.reload(name).await? {
            Some(active) => Ok(active),
            // Now in the cache of absent names, with why.
            None => Err(self
                .cached(name)
                .err()
                .unwrap_or_else(|| no_active_deployment(name))),
        }
    }

    /// Reloads the function's active deployment from the registry, and
    /// evicts the warm instances of the one it replaces. Called after every
    /// change of a function on this node.
    pub async fn refresh(&self, name: &str) -> Result<Option<Arc<Active>>, ApiError> {
        let _locked = self.lock(name).await;
        self.reload(name).await
    }

    /// Follows the registry's changes for as long as the runtime runs (see
    /// the module docs).
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        use tokio::sync::broadcast::error::RecvError;
        let mut changes = self.registry.watch();
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let changed = changes.recv().await;
                let Some(active) = this.upgrade() else {
                    return;
                };
                match changed {
                    Ok(changed) => {
                        if let Err(error) = active.refresh(&changed.function).await {
                            tracing::warn!(function = %changed.function, error = %error.message, "could not reload a changed function");
                        }
                    }
                    Err(RecvError::Lagged(_)) => active.forget_all(),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// Forgets every cached deployment and absence (the next lookup of each
    /// name reads the registry), evicting the warm instances of the
    /// deployments it held.
    fn forget_all(&self) {
        let held: Vec<Arc<Active>> = {
            let mut cache = self.cache.write().unwrap();
            self.absent.lock().unwrap().clear();
            cache.drain().map(|(_, active)| active).collect()
        };
        for active in held {
            self.invoker.evict(&active.source.id);
        }
    }

    /// What the caches know: the deployment, "none" (an error: also for a
    /// name that cannot be a function), or nothing.
    pub(crate) fn cached(&self, name: &str) -> Result<Option<Arc<Active>>, ApiError> {
        if isola_store::validate_function_name(name).is_err() {
            return Err(ApiError::not_found(format!("function {name:?}")));
        }
        if let Some(active) = self.cache.read().unwrap().get(name) {
            return Ok(Some(active.clone()));
        }
        if let Some(exists) = self.absent.lock().unwrap().get(name) {
            return Err(absent_error(name, *exists));
        }
        Ok(None)
    }

    async fn lock(&self, name: &str) -> NameGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap();
            if locks.len() >= LOCK_SWEEP_FROM && locks.len().is_power_of_two() {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry(name.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        NameGuard {
            locks: &self.locks,
            name: name.to_string(),
            guard: Some(guard),
        }
    }

    /// Reads the active deployment; the caller holds the name's lock.
    async fn reload(&self, name: &str) -> Result<Option<Arc<Active>>, ApiError> {
        let mut exists = true;
        let current = match self.registry.active_source(name).await {
            Ok(found) => found.map(|(deployment, source)| {
                Arc::new(Active {
                    series: self.metrics.series(name),
                    deployment,
                    source: Arc::new(source),
                })
            }),
            Err(isola_store::StoreError::NotFound(_)) => {
                exists = false;
                None
            }
            Err(error) => return Err(error.into()),
        };
        let previous = {
            let mut cache = self.cache.write().unwrap();
            let mut absent = self.absent.lock().unwrap();
            match &current {
                Some(active) => {
                    absent.pop(name);
                    cache.insert(name.to_string(), active.clone())
                }
                None => {
                    absent.put(name.to_string(), exists);
                    cache.remove(name)
                }
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

#[cfg(test)]
mod tests;
