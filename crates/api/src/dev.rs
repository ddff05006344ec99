//! `isola dev`: one module served at `/` for local development, with no
//! registry and no token. The caller swaps the module when its file
//! changes; each request runs on the module current when it arrived.

use crate::routes::traffic::{into_response, to_invocation_input};
use crate::ApiError;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use isola_core::{FunctionSource, Invocation, InvocationOutput, Invoker, LogLevel};
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

async fn handle(State(state): State<DevState>, request: Request) -> Result<Response, ApiError> {
    let path = request.uri().path().trim_start_matches('/').to_string();
    let input = to_invocation_input(request, &path, 32 << 20).await?;
    let source = state.source.read().unwrap().clone();
    let outcome = state
        .invoker
        .invoke(Invocation {
            id: crate::routes::invocation_id(),
            function: source,
            input,
        })
        .await;
    for line in &outcome.logs {
        let level = match line.level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        eprintln!("[{level}] {}", line.message);
    }
    match outcome.result {
        Ok(InvocationOutput::Http(http)) => into_response(usize::MAX, http),
        Ok(InvocationOutput::Json(value)) => Ok(axum::Json(value).into_response()),
        Err(error) => {
            eprintln!(
                "[error] {}: {}",
                error.code,
                error.stack.as_deref().unwrap_or(&error.message)
            );
            Err(error.into())
        }
    }
}
