//! Test doubles: a registry that counts, delays and holds, and an invoker
//! that runs nothing.

use async_trait::async_trait;
use isola_core::{FunctionError, FunctionSource, Invocation, Invoker, Outcome};
use isola_store::{
    DeploymentInfo, FunctionInfo, InvocationRecord, LogRecord, NewDeployment, Registry, Result,
    SqliteRegistry,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A registry that counts active-deployment lookups and makes those of
/// names starting with `slow-` take two seconds; it can also hold every
/// write of records forever.
pub struct Counting {
    inner: SqliteRegistry,
    /// Active-deployment lookups so far.
    pub lookups: AtomicUsize,
    /// While set, writes of records never finish.
    pub hold_records: AtomicBool,
}

impl Counting {
    /// Over an empty in-memory registry.
    pub fn new() -> Self {
        Self {
            inner: SqliteRegistry::in_memory().unwrap(),
            lookups: AtomicUsize::new(0),
            hold_records: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Registry for Counting {
    fn watch(&self) -> tokio::sync::broadcast::Receiver<isola_store::Changed> {
        self.inner.watch()
    }
    async fn create_function(&self, name: &str) -> Result<FunctionInfo> {
        self.inner.create_function(name).await
    }
    async fn function(&self, name: &str) -> Result<FunctionInfo> {
        self.inner.function(name).await
    }
    async fn functions(&self) -> Result<Vec<FunctionInfo>> {
        self.inner.functions().await
    }
    async fn delete_function(&self, name: &str) -> Result<()> {
        self.inner.delete_function(name).await
    }
    async fn create_deployment(
        &self,
        name: &str,
        deployment: NewDeployment,
        activate: bool,
    ) -> Result<DeploymentInfo> {
        self.inner
            .create_deployment(name, deployment, activate)
            .await
    }
    fn deployment_hash(&self, deployment: &NewDeployment) -> String {
        self.inner.deployment_hash(deployment)
    }
    async fn deployments(&self, name: &str) -> Result<Vec<DeploymentInfo>> {
        self.inner.deployments(name).await
    }
    async fn activate(&self, name: &str, version: u32) -> Result<DeploymentInfo> {
        self.inner.activate(name, version).await
    }
    async fn active_source(&self, name: &str) -> Result<Option<(DeploymentInfo, FunctionSource)>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if name.starts_with("slow-") {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        self.inner.active_source(name).await
    }
    async fn record_invocations(&self, records: Vec<InvocationRecord>) -> Result<()> {
        if self.hold_records.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.record_invocations(records).await
    }
    async fn invocations(&self, name: &str, limit: u32) -> Result<Vec<InvocationRecord>> {
        self.inner.invocations(name, limit).await
    }
    async fn logs(&self, name: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>> {
        self.inner.logs(name, after, limit).await
    }
    async fn prune(&self, retention: &isola_store::Retention) -> Result<isola_store::Pruned> {
        self.inner.prune(retention).await
    }
    async fn setting(&self, key: &str) -> Result<Option<String>> {
        self.inner.setting(key).await
    }
    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.inner.set_setting(key, value).await
    }
}

/// An invoker that is never asked to run anything here.
pub struct Idle;

impl Invoker for Idle {
    fn invoke(&self, _: Invocation) -> isola_core::BoxFuture<'_, Outcome> {
        unreachable!("nothing runs in these tests")
    }
    fn prepare(
        &self,
        _: Arc<FunctionSource>,
    ) -> isola_core::BoxFuture<'_, std::result::Result<(), FunctionError>> {
        Box::pin(async { Ok(()) })
    }
    fn evict(&self, _: &str) {}
}
