//! WebSocket connections to functions. A request with `Upgrade: websocket`
//! runs the function like any other; only when it answers `101` with the
//! client end of a `WebSocketPair` does the node complete the handshake
//! (hyper's upgrade) and relay frames both ways until either side closes.
//!
//! Who pays and what bounds it: the node holds at most
//! `ServerConfig::max_websockets` connections, a function at most its
//! `websocket_connections`; a message is at most `websocket_message_kb`;
//! a connection closes after `websocket_idle_s` without a message and
//! after `websocket_lifetime_s` in all. Each client event runs under the
//! limits of one invocation and waits for the previous one, so a client
//! that sends faster than its function handles stops being read; what the
//! function sends is held back at most a bound per client (then the client
//! is dropped) and its memory limit over all. The connection's record,
//! with its totals, is written when it ends.

mod relay;

use crate::respond::{self, Audience};
use crate::routes::{self, Ran};
use crate::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use isola_core::websocket::{EventReport, SocketLink};
use isola_core::{InvocationInput, InvocationOutput, Limits, LogEntry, LogLevel};
use isola_store::{InvocationRecord, SocketStats};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite;

/// What the node keeps of an upgrade request until the function answers.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    key: String,
}

/// The upgrade of `request`, when it asks for a WebSocket; `Err` with the
/// answer when it asks for one the node cannot give (not HTTP/1.1 GET,
/// no key, another version).
pub fn take(request: &mut Request) -> Option<Result<Upgrade, Response>> {
    let headers = request.headers();
    if !lists(headers, header::UPGRADE, "websocket") {
        return None;
    }
    // RFC 6455 §4.1: `Connection: Upgrade` too, or it is not an upgrade.
    let connection_upgrade = lists(headers, header::CONNECTION, "upgrade");
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let bad = |status| Some(Err(respond::plain(status)));
    let get = request.method() == axum::http::Method::GET && connection_upgrade;
    match (get, key, version_13, on_upgrade) {
        (true, Some(key), true, Some(on_upgrade)) => Some(Ok(Upgrade { on_upgrade, key })),
        (true, Some(_), false, _) => {
            let mut answer = respond::plain(StatusCode::UPGRADE_REQUIRED);
            answer.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            Some(Err(answer))
        }
        _ => bad(StatusCode::BAD_REQUEST),
    }
}

/// Whether the comma-separated header `name` lists `token`.
fn lists(headers: &axum::http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Runs the function for an upgrade request and, when it accepts, starts
/// relaying the connection; answers as the public sees it.
pub async fn serve(
    state: AppState,
    name: String,
    input: InvocationInput,
    upgrade: Upgrade,
) -> Response {
    let Ok(permit) = state.websockets.clone().try_acquire_owned() else {
        return respond::failure(Audience::Public, node_full("WebSocket connections"));
    };
    let ran = match routes::run_unrecorded(&state, &name, input).await {
        Ok(ran) => ran,
        Err(error) => return respond::failure(Audience::Public, error),
    };
    let Ran {
        id,
        outcome,
        record,
        limits,
    } = ran;
    let accepted = match &outcome.result {
        Ok(InvocationOutput::Http(response)) => response
            .upgrade
            .take()
            .map(|link| (link, response.headers.clone())),
        _ => None,
    };
    let Some((link, headers)) = accepted else {
        state.recorder.record(record);
        let limit = state.config.max_response_bytes;
        return respond::invocation(Audience::Public, limit, &id, outcome);
    };
    // The largest message it may be sent is memory it may hold: reserved
    // from the node's budget while it is open, a function at most a quarter
    // of it (refused, the function sees the connection go at once).
    let kib = (limits.websocket_message_kb as usize).saturating_add(BUFFERS_KIB);
    let Some(reservation) = reserve(&state, &name, kib, permit) else {
        drop(link);
        state.recorder.record(record);
        return respond::failure(Audience::Public, node_full("memory for WebSocket messages"));
    };
    let watcher = Recorded {
        record,
        recorder: state.recorder.clone(),
        log_bytes: 0,
        dropped: false,
    };
    accept(
        upgrade,
        link,
        &headers,
        limits,
        Box::new(watcher),
        Some(reservation),
    )
}

/// What an open connection holds of the node: its place among the
/// connections, its largest message's memory, and that memory counted
/// against its function's share; all given back when it ends.
pub struct Reservation {
    _place: OwnedSemaphorePermit,
    _buffers: OwnedSemaphorePermit,
    _share: Share,
}

/// A function's part of the node's message budget, given back when dropped.
struct Share {
    shares: Shares,
    function: String,
    kib: usize,
}

/// KiB of the node's message budget each function holds.
pub type Shares = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

impl Drop for Share {
    fn drop(&mut self) {
        let mut shares = self.shares.lock().unwrap();
        if let Some(held) = shares.get_mut(&self.function) {
            *held = held.saturating_sub(self.kib);
            if *held == 0 {
                shares.remove(&self.function);
            }
        }
    }
}

/// `kib` of the node's message budget for a connection of `function`, if
/// the node has them and the function would hold at most a quarter.
fn reserve(
    state: &AppState,
    function: &str,
    kib: usize,
    place: OwnedSemaphorePermit,
) -> Option<Reservation> {
    let budget = state.config.max_websocket_buffer_mb.saturating_mul(1024);
    let share = {
        let mut shares = state.websocket_shares.lock().unwrap();
        let held = shares.entry(function.to_string()).or_insert(0);
        if *held + kib > (budget / 4).max(kib) {
            return None;
        }
        *held += kib;
        Share {
            shares: state.websocket_shares.clone(),
            function: function.to_string(),
            kib,
        }
    };
    let buffers = state
        .websocket_buffers
        .clone()
        .try_acquire_many_owned(u32::try_from(kib).ok()?)
        .ok()?;
    Some(Reservation {
        _place: place,
        _buffers: buffers,
        _share: share,
    })
}

/// Buffers of a connection besides its largest message, in KiB.
const BUFFERS_KIB: usize = 16;

/// The node holds as much of `what` as it may.
fn node_full(what: &str) -> crate::ApiError {
    crate::ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the node holds as many {what} as it may: retry shortly"),
    )
}

/// The `101` answer to an upgrade the function accepted with `headers`;
/// starts relaying the connection, watched by `watcher`.
pub fn accept(
    upgrade: Upgrade,
    link: SocketLink,
    headers: &[(String, String)],
    limits: Limits,
    watcher: Box<dyn Watcher>,
    reservation: Option<Reservation>,
) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            if let Ok(value) = HeaderValue::try_from(value.as_str()) {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
    }
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let key = tungstenite::handshake::derive_accept_key(upgrade.key.as_bytes());
    if let Ok(key) = HeaderValue::try_from(key) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, key);
    }
    let connection = relay::Connection::new(link, limits, watcher, reservation);
    tokio::spawn(connection.run(upgrade.on_upgrade));
    response
}

/// What follows a relayed connection: each event's report, and its end.
pub trait Watcher: Send + 'static {
    /// One event ran in the function.
    fn event(&mut self, report: &EventReport);
    /// The connection ended.
    fn end(self: Box<Self>, ended: Ended);
}

/// How a connection ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// What went over it.
    pub stats: SocketStats,
    /// How long it was open.
    pub open: Duration,
}

/// Console lines kept in a connection's record, at most, and their bytes.
const MAX_LINES: usize = 1000;
const MAX_LOG_BYTES: usize = 256 << 10;

/// `isola serve`'s watcher: the connection's invocation record, written
/// when it ends with its totals, CPU time and console lines.
struct Recorded {
    record: InvocationRecord,
    recorder: crate::recorder::Recorder,
    /// Bytes of console lines kept so far.
    log_bytes: usize,
    /// Whether lines were dropped (said once).
    dropped: bool,
}

impl Watcher for Recorded {
    fn event(&mut self, report: &EventReport) {
        let record = &mut self.record;
        record.cpu_us += report.cpu_us;
        for line in &report.logs {
            let fits = record.logs.len() < MAX_LINES
                && self.log_bytes + line.message.len() <= MAX_LOG_BYTES;
            if fits {
                self.log_bytes += line.message.len();
                record.logs.push(line.clone());
            } else if !self.dropped {
                self.dropped = true;
                record.logs.push(LogEntry {
                    level: LogLevel::Warn,
                    message: format!(
                        "console lines past {MAX_LINES} or {} KiB of this connection are dropped",
                        MAX_LOG_BYTES >> 10
                    ),
                });
            }
        }
        if let Some(error) = &report.error {
            record.status = "error".into();
            record.error_code = Some(error.code.as_str().to_string());
            record.error_message = Some(error.detail());
        }
    }

    fn end(mut self: Box<Self>, ended: Ended) {
        self.record.websocket = Some(ended.stats);
        self.record.duration_us += ended.open.as_micros() as u64;
        self.recorder.record(self.record);
    }
}
