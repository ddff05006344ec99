//! The server's shared state and configuration.

use crate::active::ActiveFunctions;
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use isola_core::Invoker;
use isola_store::{Registry, Retention};
use std::sync::Arc;
use std::time::Duration;

/// How often records past the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// SHA-256 (hex) of the admin token.
    pub token_hash: String,
    /// SHA-256 (hex) of a token accepted on `/metrics` only, if any.
    pub metrics_token_hash: Option<String>,
    /// `example.com` routes `hello.example.com` to function `hello`.
    pub base_domain: Option<String>,
    /// Largest request body passed to a function, in bytes.
    pub max_request_bytes: usize,
    /// Largest response body a function may return, in bytes.
    pub max_response_bytes: usize,
    /// Largest deployment upload, in bytes.
    pub max_deploy_bytes: usize,
    /// Most bytes of invocation records waiting to be written; past it,
    /// records are dropped and counted.
    pub max_record_queue_bytes: usize,
    /// What to keep of invocation records and logs (pruned every minute);
    /// `None` keeps everything.
    pub retention: Option<Retention>,
    /// Most WebSocket connections open on the node, all functions together.
    pub max_websockets: usize,
    /// Memory the node's WebSocket connections may hold in messages being
    /// received, in MiB: each connection reserves its function's
    /// `websocket_message_kb` (plus 16 KiB of buffers) while it is open.
    pub max_websocket_buffer_mb: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            token_hash: String::new(),
            metrics_token_hash: None,
            base_domain: None,
            max_request_bytes: 10 << 20,
            max_response_bytes: 32 << 20,
            max_deploy_bytes: 20 << 20,
            max_record_queue_bytes: 64 << 20,
            retention: None,
            max_websockets: 10_000,
            max_websocket_buffer_mb: 4096,
        }
    }
}

/// What every handler can reach: one `Arc`, so handing it to a handler
/// costs one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    /// Configuration.
    pub config: ServerConfig,
    /// Where functions are kept.
    pub registry: Arc<dyn Registry>,
    /// What runs them.
    pub invoker: Arc<dyn Invoker>,
    /// Active deployments, cached.
    pub active: Arc<ActiveFunctions>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Writes invocation records in the background.
    pub recorder: Recorder,
    /// Functions' KV storage, if the node has one.
    pub kv: Option<Arc<dyn isola_kv::KvStore>>,
    /// One lock per function, held by every change of its active
    /// deployment (uploads, secret changes, activations), so that two
    /// changes made at once do not lose one another.
    pub deploys: DeployLocks,
    /// The runtime that does storage work (the one the state was made on):
    /// requests served on other threads hand it their lookups.
    pub storage: tokio::runtime::Handle,
    /// One permit per WebSocket connection the node may hold open.
    pub websockets: Arc<tokio::sync::Semaphore>,
    /// One permit per KiB its connections may hold in messages being read.
    pub websocket_buffers: Arc<tokio::sync::Semaphore>,
    /// Of those, the KiB each function holds (at most a quarter each).
    pub websocket_shares: crate::websocket::Shares,
}

impl AppState {
    /// State for a registry and an invoker; starts the record writer.
    pub fn new(
        config: ServerConfig,
        registry: Arc<dyn Registry>,
        invoker: Arc<dyn Invoker>,
        kv: Option<Arc<dyn isola_kv::KvStore>>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let recorder = Recorder::start(
            registry.clone(),
            config.max_record_queue_bytes,
            metrics.records_dropped.clone(),
        );
        if let Some(retention) = config.retention {
            crate::recorder::spawn_pruner(registry.clone(), retention, PRUNE_EVERY);
        }
        use tokio::sync::Semaphore;
        let permits = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        let websockets = permits(config.max_websockets);
        let websocket_buffers = permits(config.max_websocket_buffer_mb.saturating_mul(1024));
        Self(Arc::new(Shared {
            kv,
            config,
            active: {
                let active = Arc::new(ActiveFunctions::new(
                    registry.clone(),
                    invoker.clone(),
                    metrics.clone(),
                ));
                // Changes made elsewhere reach the cache too.
                active.follow();
                active
            },
            storage: tokio::runtime::Handle::current(),
            websockets,
            websocket_buffers,
            websocket_shares: Default::default(),
            deploys: DeployLocks::default(),
            recorder,
            metrics,
            registry,
            invoker,
        }))
    }
}

/// Per-function locks for changes of the active deployment.
#[derive(Default)]
pub struct DeployLocks(
    std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
);

impl DeployLocks {
    /// Waits for, then holds, `function`'s lock. Only functions that exist
    /// are locked (callers look them up first), so the map stays bounded.
    pub async fn lock(&self, function: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .0
            .lock()
            .unwrap()
            .entry(function.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}
