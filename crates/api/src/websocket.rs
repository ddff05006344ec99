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

use crate::respond::{self, Audience};
use crate::routes::{self, Ran};
use crate::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use isola_core::websocket::{close_code, EventReport, SocketEvent, SocketLink, WsFrame, WsMessage};
use isola_core::{InvocationInput, InvocationOutput, Limits, LogEntry, LogLevel};
use isola_store::{InvocationRecord, SocketStats};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

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
    let asks = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    if !asks {
        return None;
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let bad = |status| Some(Err(respond::plain(status)));
    match (
        request.method() == axum::http::Method::GET,
        key,
        version_13,
        on_upgrade,
    ) {
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

/// Runs the function for an upgrade request and, when it accepts, starts
/// relaying the connection; answers as the public sees it.
pub async fn serve(
    state: AppState,
    name: String,
    input: InvocationInput,
    upgrade: Upgrade,
) -> Response {
    let Ok(permit) = state.websockets.clone().try_acquire_owned() else {
        return respond::failure(
            Audience::Public,
            crate::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the node holds as many WebSocket connections as it may",
            ),
        );
    };
    let ran = match routes::run_unrecorded(&state, &name, input).await {
        Ok(ran) => ran,
        Err(error) => return respond::failure(Audience::Public, error),
    };
    let Ran {
        id,
        mut outcome,
        record,
        limits,
    } = ran;
    let link = match &outcome.result {
        Ok(InvocationOutput::Http(response)) => response.upgrade.take(),
        _ => None,
    };
    let Some(link) = link else {
        state.recorder.record(record);
        let limit = state.config.max_response_bytes;
        return respond::invocation(Audience::Public, limit, &id, outcome);
    };
    let Ok(InvocationOutput::Http(accepted)) = std::mem::replace(
        &mut outcome.result,
        Ok(InvocationOutput::Json(serde_json::Value::Null)),
    ) else {
        unreachable!("a link comes with an HTTP response");
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &accepted.headers {
        if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            if let Ok(value) = HeaderValue::try_from(value.as_str()) {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = tungstenite::handshake::derive_accept_key(upgrade.key.as_bytes());
    if let Ok(accept) = HeaderValue::try_from(accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let connection = Connection {
        link,
        limits,
        record,
        stats: SocketStats::default(),
        started: Instant::now(),
        _permit: permit,
    };
    tokio::spawn(connection.run(state, upgrade.on_upgrade));
    response
}

/// One relayed connection.
struct Connection {
    link: SocketLink,
    limits: Limits,
    record: InvocationRecord,
    stats: SocketStats,
    started: Instant,
    /// Its place among the node's connections.
    _permit: OwnedSemaphorePermit,
}

/// How long a close waits for the other side's close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Console lines kept in a connection's record, at most.
const MAX_LINES: usize = 1000;

impl Connection {
    async fn run(mut self, state: AppState, on_upgrade: OnUpgrade) {
        let started_cpu = self.record.cpu_us;
        let close = match on_upgrade.await {
            Ok(upgraded) => {
                let max = self.limits.websocket_message_bytes();
                let config = WebSocketConfig::default()
                    .max_message_size(Some(max))
                    .max_frame_size(Some(max));
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                self.relay(socket).await
            }
            // The client left before the handshake finished.
            Err(_) => self.tell(close_code::ABNORMAL, "").await,
        };
        self.stats.close_code = close;
        self.record.websocket = Some(self.stats);
        self.record.duration_us += self.started.elapsed().as_micros() as u64;
        tracing::debug!(
            cpu_us = self.record.cpu_us - started_cpu,
            "websocket closed"
        );
        state.recorder.record(self.record);
    }

    /// Relays until either side closes; the close code.
    async fn relay(
        &mut self,
        mut socket: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    ) -> u16 {
        let idle = Duration::from_secs(self.limits.websocket_idle_s.into());
        let lifetime =
            tokio::time::sleep(Duration::from_secs(self.limits.websocket_lifetime_s.into()));
        tokio::pin!(lifetime);
        let mut idle_until = Instant::now() + idle;
        loop {
            let overflow = self.link.overflow.clone();
            tokio::select! {
                incoming = socket.next() => {
                    idle_until = Instant::now() + idle;
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            let message = WsMessage::Text(text.as_str().to_string());
                            if let Some(code) = self.received(&mut socket, message).await {
                                return code;
                            }
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            if let Some(code) = self.received(&mut socket, WsMessage::Binary(bytes.to_vec())).await {
                                return code;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.as_str().to_string()));
                            self.tell(code, &reason).await;
                            // tungstenite answers the close; flushing sends it.
                            let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
                            return code;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(tungstenite::Error::Capacity(_))) => {
                            return self.close(&mut socket, close_code::TOO_BIG, "message too big").await;
                        }
                        Some(Err(_)) | None => return self.tell(close_code::ABNORMAL, "").await,
                    }
                }
                outgoing = self.link.outgoing.recv() => match outgoing {
                    Some(WsFrame::Message(message)) => {
                        idle_until = Instant::now() + idle;
                        if !self.send(&mut socket, message).await {
                            return self.tell(close_code::ABNORMAL, "").await;
                        }
                    }
                    Some(WsFrame::Close { code, reason }) => {
                        return self.close(&mut socket, code, &reason).await;
                    }
                    // The isolate is gone without closing (its node stops).
                    None => {
                        let code = close_code::SERVICE_RESTART;
                        return self.close(&mut socket, code, "the function restarted").await;
                    }
                },
                _ = overflow.notified() => return self.tell(close_code::ABNORMAL, "").await,
                _ = tokio::time::sleep_until(idle_until) => {
                    return self.close(&mut socket, close_code::GOING_AWAY, "idle timeout").await;
                }
                _ = &mut lifetime => {
                    return self.close(&mut socket, close_code::POLICY, "connection lifetime reached").await;
                }
            }
        }
    }

    /// Hands a client's message to the function; a close code when that
    /// ended the connection.
    async fn received(
        &mut self,
        socket: &mut WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        message: WsMessage,
    ) -> Option<u16> {
        self.stats.messages_in += 1;
        self.stats.bytes_in += message.len() as u64;
        let report = self.deliver(WsFrame::Message(message)).await;
        match report {
            Some(report) if report.error.is_none() => None,
            // The function failed (its host closes its other connections).
            Some(_) => Some(
                self.close(socket, close_code::INTERNAL, "the function failed")
                    .await,
            ),
            None => Some(
                self.close(
                    socket,
                    close_code::SERVICE_RESTART,
                    "the function restarted",
                )
                .await,
            ),
        }
    }

    /// Writes a message of the function's; `false` when the client is gone
    /// or too slow.
    async fn send(
        &mut self,
        socket: &mut WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        message: WsMessage,
    ) -> bool {
        let length = message.len();
        self.stats.messages_out += 1;
        self.stats.bytes_out += length as u64;
        let message = match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Binary(bytes) => Message::Binary(bytes.into()),
        };
        let overflow = self.link.overflow.clone();
        let sent = tokio::select! {
            sent = socket.send(message) => sent.is_ok(),
            _ = overflow.notified() => false,
        };
        self.link.written(length);
        sent
    }

    /// Tells the function, then closes with `code` and `reason` and waits
    /// briefly for the client's answer: a client that saw the close can
    /// count on the function having seen it too.
    async fn close(
        &mut self,
        socket: &mut WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        code: u16,
        reason: &str,
    ) -> u16 {
        self.tell(code, reason).await;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if socket.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = socket.next().await {}
            }
        })
        .await;
        code
    }

    /// Tells the function its socket closed; returns `code`.
    async fn tell(&mut self, code: u16, reason: &str) -> u16 {
        let frame = WsFrame::Close {
            code,
            reason: reason.to_string(),
        };
        self.deliver(frame).await;
        code
    }

    /// Runs one event in the function's host; its report, or `None` when
    /// the host is gone.
    async fn deliver(&mut self, frame: WsFrame) -> Option<EventReport> {
        let (done, report) = tokio::sync::oneshot::channel();
        let event = SocketEvent {
            socket: self.link.socket,
            frame,
            done,
        };
        self.link.events.send(event).await.ok()?;
        let report = report.await.ok()?;
        self.record.cpu_us += report.cpu_us;
        let room = MAX_LINES.saturating_sub(self.record.logs.len());
        let dropped = report.logs.len().saturating_sub(room);
        self.record
            .logs
            .extend(report.logs.iter().take(room).cloned());
        if dropped > 0 && room > 0 {
            self.record.logs.push(LogEntry {
                level: LogLevel::Warn,
                message: format!("console lines past {MAX_LINES} of this connection are dropped"),
            });
        }
        if let Some(error) = &report.error {
            self.record.status = "error".into();
            self.record.error_code = Some(error.code.as_str().to_string());
            self.record.error_message = Some(respond::error_detail(error));
        }
        Some(report)
    }
}
