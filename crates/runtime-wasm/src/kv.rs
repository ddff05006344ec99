//! `isola:kv/store` (`wit/kv.wit`) for components: the function's own KV
//! namespace, over the node's `isola_kv::KvStore`, with the same limits as
//! JavaScript's KV binding (the store's key, value and quota limits, and
//! the per-invocation `isola_kv::Budget` of operations and written bytes).

use isola_kv::{Budget, Check, KvError, KvStore, Mutation};
use std::sync::Arc;

wasmtime::component::bindgen!({
    path: "wit/kv.wit",
    world: "kv",
    imports: { default: async | trappable },
});

pub use isola::kv::store::add_to_linker;
use isola::kv::store::{Entry, Error, Host, Page};

/// One run's access to its function's namespace.
pub struct KvAccess {
    store: Option<Arc<dyn KvStore>>,
    namespace: String,
    budget: Budget,
}

impl KvAccess {
    /// Access for one run of `function`: its namespace when it has a KV
    /// binding and the node a store; nothing otherwise.
    pub fn of(store: Option<&Arc<dyn KvStore>>, function: &isola_core::FunctionSource) -> Self {
        Self {
            store: function.kv_binding.as_ref().and(store.cloned()),
            namespace: function.name.clone(),
            budget: Budget::default(),
        }
    }

    /// The store, after spending one operation of the budget and the
    /// bytes `writes` write.
    fn spend(&mut self, writes: &[Mutation]) -> Result<Arc<dyn KvStore>, Error> {
        let Some(store) = &self.store else {
            return Err(Error::Unavailable(
                "this function has no KV: deploy it with a KV binding".into(),
            ));
        };
        self.budget.spend_op().map_err(Error::Limit)?;
        self.budget.spend_writes(writes).map_err(Error::Limit)?;
        Ok(store.clone())
    }
}

fn error(error: KvError) -> Error {
    match error {
        KvError::Invalid(message) | KvError::QuotaExceeded(message) => Error::Limit(message),
        other => {
            tracing::warn!(error = %other, "a function's KV operation failed");
            Error::Storage(other.public_message())
        }
    }
}

type Answer<T> = wasmtime::Result<Result<T, Error>>;

impl Host for KvAccess {
    async fn get(&mut self, key: String) -> Answer<Option<Entry>> {
        let store = match self.spend(&[]) {
            Ok(store) => store,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(store
            .get(&self.namespace, &key)
            .await
            .map(|found| {
                found.map(|e| Entry {
                    value: e.value,
                    version: e.version,
                })
            })
            .map_err(error))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Answer<u64> {
        let write = [Mutation::Put {
            key,
            value,
            ttl_seconds: None,
        }];
        let store = match self.spend(&write) {
            Ok(store) => store,
            Err(refused) => return Ok(Err(refused)),
        };
        let [Mutation::Put { key, value, .. }] = write else {
            unreachable!("a put")
        };
        Ok(store
            .put(&self.namespace, &key, value, None)
            .await
            .map_err(error))
    }

    async fn delete(&mut self, key: String) -> Answer<()> {
        let write = [Mutation::Delete { key }];
        let store = match self.spend(&write) {
            Ok(store) => store,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(store
            .atomic(&self.namespace, Vec::new(), write.into())
            .await
            .map(|_| ())
            .map_err(error))
    }

    async fn list(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> Answer<Page> {
        let store = match self.spend(&[]) {
            Ok(store) => store,
            Err(refused) => return Ok(Err(refused)),
        };
        let limit = (limit as usize).min(store.limits().max_list);
        Ok(store
            .list(&self.namespace, &prefix, limit, cursor)
            .await
            .map(|page| Page {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(error))
    }

    async fn check_and_set(
        &mut self,
        key: String,
        version: Option<u64>,
        value: Vec<u8>,
    ) -> Answer<bool> {
        let checks = vec![Check {
            key: key.clone(),
            version,
        }];
        let mutations = vec![Mutation::Put {
            key,
            value,
            ttl_seconds: None,
        }];
        let store = match self.spend(&mutations) {
            Ok(store) => store,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(store
            .atomic(&self.namespace, checks, mutations)
            .await
            .map(|written| written.is_some())
            .map_err(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(dir: &std::path::Path) -> KvAccess {
        let store: Arc<dyn KvStore> =
            Arc::new(isola_kv::SqliteKv::open(&dir.join("kv.db"), Default::default()).unwrap());
        let mut function = isola_core::FunctionSource::single_module("f", "f", "");
        function.kv_binding = Some("KV".into());
        KvAccess::of(Some(&store), &function)
    }

    #[tokio::test]
    async fn check_and_set_writes_only_over_the_version_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = access(dir.path());
        let cas = |version| (String::from("k"), version, b"v".to_vec());
        let (key, version, value) = cas(None);
        assert!(kv
            .check_and_set(key, version, value)
            .await
            .unwrap()
            .unwrap());
        let (key, version, value) = cas(None);
        assert!(!kv
            .check_and_set(key, version, value)
            .await
            .unwrap()
            .unwrap());
        let read = kv.get("k".into()).await.unwrap().unwrap().unwrap();
        let (key, _, value) = cas(None);
        assert!(kv
            .check_and_set(key, Some(read.version), value)
            .await
            .unwrap()
            .unwrap());
        let page = kv.list(String::new(), None, 10).await.unwrap().unwrap();
        assert_eq!(page.keys.len(), 1);
    }

    #[tokio::test]
    async fn an_invocation_has_a_budget_of_operations() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = access(dir.path());
        for _ in 1..isola_kv::MAX_OPS_PER_INVOCATION {
            assert!(kv.get("k".into()).await.unwrap().is_ok());
        }
        assert!(kv.delete("k".into()).await.unwrap().is_ok());
        let refused = kv.get("k".into()).await.unwrap().unwrap_err();
        assert!(matches!(refused, Error::Limit(_)), "{refused:?}");
        // Written bytes have a budget of their own.
        let mut kv = access(dir.path());
        let value = vec![7u8; 1 << 20];
        for _ in 0..15 {
            assert!(kv.set("big".into(), value.clone()).await.unwrap().is_ok());
        }
        let refused = kv.set("big".into(), value).await.unwrap().unwrap_err();
        assert!(
            matches!(&refused, Error::Limit(m) if m.contains("write limit")),
            "{refused:?}"
        );
    }
}
