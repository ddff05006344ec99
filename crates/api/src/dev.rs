//! `isola dev`: one module served at `/` for local development, with no
//! registry and no token. The caller swaps the module when its file
//! changes; each request runs on the module current when it arrived.
//!
//! Failures are answered like public traffic (a bare 500), and their code,
//! message and stack are printed to the terminal instead.

use crate::respond::{self, Audience};
use crate::routes::traffic::to_invocation_input;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use isola_core::{FunctionSource, Invocation, Invoker, LogLevel};
use std::sync::{Arc, RwLock};

/// What the dev server runs.
#[derive(Clone)]
pub struct DevState {
    /// Runs the module.
    pub invoker: Arc<dyn Invoker>,
    /// The current version of the module.
    pub source: Arc<RwLock<Arc<FunctionSource>>>,
}

/// A router sending every request to the module's `fetch` handler.
pub fn router(state: DevState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<DevState>, request: Request) -> Response {
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    let path = request.uri().path().trim_start_matches('/').to_string();
    let input = match to_invocation_input(request, &path, 32 << 20).await {
        Ok(input) => input,
        Err(error) => {
            eprintln!("[error] {}: {}", error.code, error.message);
            return respond::failure(Audience::Public, error);
        }
    };
    let source = state.source.read().unwrap().clone();
    let id = crate::routes::invocation_id();
    let mut outcome = state
        .invoker
        .invoke(Invocation {
            id: id.clone(),
            function: source,
            input,
        })
        .await;
    for line in std::mem::take(&mut outcome.logs) {
        let level = match line.level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        eprintln!("[{level}] {}", line.message);
    }
    if let Err(error) = &outcome.result {
        eprintln!("[error] {}: {}", error.code, respond::error_detail(error));
    }
    let metrics = outcome.metrics;
    let response = respond::invocation(Audience::Public, usize::MAX, &id, outcome);
    // One line per request, as `wrangler dev` prints.
    let target: String = target
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    eprintln!(
        "{method} {target} {} {:.1} ms (CPU {:.1} ms{})",
        response.status().as_u16(),
        metrics.duration_us as f64 / 1000.0,
        metrics.cpu_us as f64 / 1000.0,
        if metrics.cold_start { ", cold" } else { "" }
    );
    response
}
