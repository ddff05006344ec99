//! isola's HTTP server.
//!
//! - `/v1/…`: the management API (functions, deployments, invoke, records,
//!   logs), bearer-token protected, described at `/v1/openapi.json`.
//! - `/fn/<name>/<path>` (and `<name>.<base-domain>` by Host header): function
//!   traffic, handed to the function's Workers-style `fetch` handler.
//! - `/metrics`: Prometheus metrics, for the admin token or the metrics token.
//!
//! The server is generic over its backends: any [`Registry`] for storage and
//! any [`Invoker`] for running code, so the later multi-node mode plugs in
//! without touching the routes.

mod active;
mod auth;
pub mod dev;
mod error;
mod local;
mod metrics;
mod recorder;
mod respond;
mod routes;
mod state;
#[cfg(test)]
mod testing;
mod websocket;

pub use auth::{hash_token, new_token, TOKEN_HASH_KEY};
pub use axum::Router;
pub use error::ApiError;
pub use local::serve_local;
pub use state::{AppState, ServerConfig};

use isola_core::Invoker;
use isola_store::Registry;
use std::sync::Arc;

/// Builds the router for a registry, an invoker and, optionally, the KV
/// store the invoker's functions use (for the `/kv` endpoints).
pub async fn app(
    config: ServerConfig,
    registry: Arc<dyn Registry>,
    invoker: Arc<dyn Invoker>,
    kv: Option<Arc<dyn isola_kv::KvStore>>,
) -> axum::Router {
    Node::new(config, registry, invoker, kv).router()
}

/// A node's server: one state, served from the main runtime and from the
/// threads that run the functions. Create it on the main runtime, which
/// then does the storage work (records, lookups, management requests).
#[derive(Clone)]
pub struct Node {
    state: AppState,
}

impl Node {
    /// The server for a registry, an invoker and, optionally, the KV store
    /// the invoker's functions use (for the `/kv` endpoints).
    pub fn new(
        config: ServerConfig,
        registry: Arc<dyn Registry>,
        invoker: Arc<dyn Invoker>,
        kv: Option<Arc<dyn isola_kv::KvStore>>,
    ) -> Self {
        Self {
            state: AppState::new(config, registry, invoker, kv),
        }
    }

    /// Writes the invocation records still queued; call when the node
    /// has stopped serving.
    pub async fn shutdown(&self) {
        self.state.recorder.flush().await;
    }

    /// Every route, answered on the runtime that serves it.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// The router for the threads that run functions ([`serve_local`]):
    /// function traffic and the invoke route are answered there; the rest
    /// is handed to the runtime this node was created on.
    pub fn worker_router(&self) -> axum::Router {
        local::worker_router(self.state.clone(), self.router())
    }
}

/// How long a shutdown waits for open connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
