//! A function's KV namespace inside its isolate: the ops' [`KvHost`] over
//! an `isola_kv::KvStore`, fixed to the function's own namespace and
//! limited in operations and written bytes per invocation
//! (`isola_kv::Budget`).

use crate::extension::{KvFuture, KvHost, KvPage, KvWrite};
use isola_kv::{Budget, Check, KvStore, Mutation};
use std::sync::Arc;

/// One function's namespace.
pub struct NamespacedKv {
    store: Arc<dyn KvStore>,
    namespace: String,
    budget: Arc<Budget>,
}

impl NamespacedKv {
    /// The namespace `namespace` of `store`, with a budget the isolate
    /// refills at each invocation.
    pub fn new(store: Arc<dyn KvStore>, namespace: String, budget: Arc<Budget>) -> Self {
        Self {
            store,
            namespace,
            budget,
        }
    }

    fn spend(&self) -> Result<(), String> {
        self.budget.spend_op()
    }

    fn run<T: 'static>(
        &self,
        work: impl FnOnce(Arc<dyn KvStore>, String) -> KvFuture<T>,
    ) -> KvFuture<T> {
        match self.spend() {
            Ok(()) => work(self.store.clone(), self.namespace.clone()),
            Err(error) => Box::pin(async move { Err(error) }),
        }
    }
}

impl KvHost for NamespacedKv {
    fn get(&self, key: String) -> KvFuture<Option<(Vec<u8>, u64)>> {
        self.run(|store, namespace| {
            Box::pin(async move {
                let entry = store.get(&namespace, &key).await.map_err(told)?;
                Ok(entry.map(|e| (e.value, e.version)))
            })
        })
    }

    fn list(&self, prefix: String, limit: usize, cursor: Option<String>) -> KvFuture<KvPage> {
        self.run(|store, namespace| {
            Box::pin(async move {
                let page = store
                    .list(&namespace, &prefix, limit, cursor)
                    .await
                    .map_err(told)?;
                Ok((page.keys, page.cursor))
            })
        })
    }

    fn atomic(
        &self,
        checks: Vec<(String, Option<u64>)>,
        mutations: Vec<KvWrite>,
    ) -> KvFuture<Option<u64>> {
        let checks = checks
            .into_iter()
            .map(|(key, version)| Check { key, version })
            .collect();
        let mutations = mutations
            .into_iter()
            .map(|(key, value, ttl_seconds)| match value {
                Some(value) => Mutation::Put {
                    key,
                    value,
                    ttl_seconds,
                },
                None => Mutation::Delete { key },
            })
            .collect::<Vec<_>>();
        if let Err(refused) = self.budget.spend_writes(&mutations) {
            return Box::pin(async move { Err(refused) });
        }
        self.run(|store, namespace| {
            Box::pin(async move {
                store
                    .atomic(&namespace, checks, mutations)
                    .await
                    .map_err(told)
            })
        })
    }
}

/// `error` as the function is told it; its detail goes to the node's log.
fn told(error: isola_kv::KvError) -> String {
    if matches!(
        error,
        isola_kv::KvError::Storage(_) | isola_kv::KvError::Indeterminate(_)
    ) {
        tracing::warn!(%error, "a function's KV operation failed");
    }
    error.public_message()
}
