//! isola's registry: functions, their immutable deployments, which one is
//! active, invocation records and captured console output.
//!
//! [`Registry`] is the interface; [`SqliteRegistry`] is the embedded default
//! (one SQLite file in WAL mode, every acknowledged write synced to disk,
//! deployment secrets sealed with a [`NodeKey`] kept outside it). A
//! multi-node backend on NATS JetStream KV will implement the same trait.

mod error;
mod model;
mod records;
mod retention;
mod schema;
mod secrets;
mod sqlite;

pub use error::{Result, StoreError};
pub use model::{
    validate_function_name, DeploymentInfo, FunctionInfo, InvocationRecord, LogRecord,
    NewDeployment, RequestLine, SocketStats,
};
pub use retention::{Pruned, Retention};
pub use secrets::{database_is_sealed, NodeKey};
pub use sqlite::SqliteRegistry;

use async_trait::async_trait;
use isola_core::FunctionSource;

/// A change of a function that every node caching it must see: it was
/// created or deleted, or its active deployment changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The function's name.
    pub function: String,
}

/// Changes a watcher may fall behind by before it misses some (and must
/// then reload everything it caches: `RecvError::Lagged`).
pub const WATCH_CAPACITY: usize = 1024;

/// Where functions and deployments are kept.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Changes as they happen: made through this registry and, for a shared
    /// backend, by other nodes. A receiver that lags behind misses changes
    /// (`RecvError::Lagged`) and must reload whatever it caches.
    fn watch(&self) -> tokio::sync::broadcast::Receiver<Changed>;

    /// Creates a function with no deployment yet.
    async fn create_function(&self, name: &str) -> Result<FunctionInfo>;
    /// One function.
    async fn function(&self, name: &str) -> Result<FunctionInfo>;
    /// Every function, by name.
    async fn functions(&self) -> Result<Vec<FunctionInfo>>;
    /// Deletes a function with its deployments, records and logs.
    async fn delete_function(&self, name: &str) -> Result<()>;

    /// Stores a new immutable deployment; activates it when `activate`.
    async fn create_deployment(
        &self,
        name: &str,
        deployment: NewDeployment,
        activate: bool,
    ) -> Result<DeploymentInfo>;
    /// The content hash a deployment is stored under (secret values enter
    /// it through a keyed digest only).
    fn deployment_hash(&self, deployment: &NewDeployment) -> String;
    /// The function's deployments, newest first.
    async fn deployments(&self, name: &str) -> Result<Vec<DeploymentInfo>>;
    /// Makes `version` the active deployment (a rollback when it is older).
    async fn activate(&self, name: &str, version: u32) -> Result<DeploymentInfo>;
    /// What to run for the function's active deployment, if it has one.
    async fn active_source(&self, name: &str) -> Result<Option<(DeploymentInfo, FunctionSource)>>;

    /// Stores invocation records with their console output.
    async fn record_invocations(&self, records: Vec<InvocationRecord>) -> Result<()>;
    /// The function's latest invocation records, newest first.
    async fn invocations(&self, name: &str, limit: u32) -> Result<Vec<InvocationRecord>>;
    /// Console lines of the function after sequence number `after`, oldest first.
    async fn logs(&self, name: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>>;
    /// Deletes the records and lines `retention` does not keep, oldest
    /// first (a backend without retention keeps everything).
    async fn prune(&self, retention: &Retention) -> Result<Pruned> {
        let _ = retention;
        Ok(Pruned::default())
    }

    /// A setting of the node (e.g. the admin token's hash).
    async fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets a setting of the node.
    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;
}
