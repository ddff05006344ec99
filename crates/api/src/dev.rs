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
use isola_core::websocket::EventReport;
use isola_core::{FunctionSource, Invocation, InvocationOutput, Invoker, LogEntry, LogLevel};
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

async fn handle(State(state): State<DevState>, mut request: Request) -> Response {
    let method = request.method().clone();
    let upgrade = match crate::websocket::take(&mut request) {
        Some(Err(refused)) => return refused,
        Some(Ok(upgrade)) => Some(upgrade),
        None => None,
    };
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
            function: source.clone(),
            input,
        })
        .await;
    print_logs(&std::mem::take(&mut outcome.logs));
    if let Err(error) = &outcome.result {
        eprintln!("[error] {}: {}", error.code, error.detail());
    }
    let target: String = target
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if let (Some(upgrade), Ok(InvocationOutput::Http(accepted))) = (upgrade, &outcome.result) {
        if let Some(link) = accepted.upgrade.take() {
            eprintln!("{method} {target} 101 WebSocket open");
            let watcher = Printed { target };
            let headers = &accepted.headers;
            return crate::websocket::accept(
                upgrade,
                link,
                headers,
                source.limits,
                Box::new(watcher),
                None,
            );
        }
    }
    let metrics = outcome.metrics;
    let response = respond::invocation(Audience::Public, usize::MAX, &id, outcome);
    // One line per request, as `wrangler dev` prints.
    eprintln!(
        "{method} {target} {} {:.1} ms (CPU {:.1} ms{})",
        response.status().as_u16(),
        metrics.duration_us as f64 / 1000.0,
        metrics.cpu_us as f64 / 1000.0,
        if metrics.cold_start { ", cold" } else { "" }
    );
    response
}

/// Prints console lines to the terminal, with their level.
fn print_logs(lines: &[LogEntry]) {
    for line in lines {
        let level = match line.level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        eprintln!("[{level}] {}", line.message);
    }
}

/// `isola dev`'s watcher of a WebSocket connection: each event's console
/// lines and failure as they happen, one line when it closes.
struct Printed {
    target: String,
}

impl crate::websocket::Watcher for Printed {
    fn event(&mut self, report: &EventReport) {
        print_logs(&report.logs);
        if let Some(error) = &report.error {
            eprintln!("[error] {}: {}", error.code, error.detail());
        }
    }

    fn end(self: Box<Self>, ended: crate::websocket::Ended) {
        let stats = ended.stats;
        eprintln!(
            "WebSocket {} closed {} after {:.1} s ({} messages in, {} out)",
            self.target,
            stats.close_code,
            ended.open.as_secs_f64(),
            stats.messages_in,
            stats.messages_out
        );
    }
}
