//! Relaying one accepted WebSocket connection: client messages to the
//! function one event at a time, the function's frames to the client,
//! closes either way, and the idle and lifetime limits.

use super::{Ended, Watcher};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use isola_core::websocket::{close_code, EventReport, SocketEvent, SocketLink, WsFrame, WsMessage};
use isola_core::Limits;
use isola_store::SocketStats;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The connection, upgraded.
type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One relayed connection.
pub(super) struct Connection {
    link: SocketLink,
    limits: Limits,
    watcher: Option<Box<dyn Watcher>>,
    stats: SocketStats,
    started: Instant,
    /// When it closes for want of messages (either way; pings do not count).
    idle_until: Instant,
    /// When it closes whatever happens.
    ends_at: Instant,
    /// Its place among the node's connections, and its share of their
    /// message memory.
    _reservation: Option<super::Reservation>,
}

/// tungstenite's read buffer per connection.
const READ_BUFFER: usize = 4096;

/// How long the upgrade may take once the 101 is on its way.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// How long a close waits for the other side's close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Connection {
    pub(super) fn new(
        link: SocketLink,
        limits: Limits,
        watcher: Box<dyn Watcher>,
        reservation: Option<super::Reservation>,
    ) -> Self {
        let now = Instant::now();
        Self {
            link,
            watcher: Some(watcher),
            stats: SocketStats::default(),
            started: now,
            idle_until: now + Duration::from_secs(limits.websocket_idle_s.into()),
            ends_at: now + Duration::from_secs(limits.websocket_lifetime_s.into()),
            limits,
            _reservation: reservation,
        }
    }

    pub(super) async fn run(mut self, on_upgrade: OnUpgrade) {
        let close = match tokio::time::timeout(HANDSHAKE, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                let max = self.limits.websocket_message_bytes();
                let config = WebSocketConfig::default()
                    .max_message_size(Some(max))
                    .max_frame_size(Some(max))
                    // Eagerly allocated per connection: 4 KiB, not 128.
                    .read_buffer_size(READ_BUFFER)
                    .write_buffer_size(0);
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                self.relay(socket).await
            }
            // The client left (or stalled) before the handshake finished.
            _ => self.tell(close_code::ABNORMAL, "").await,
        };
        self.stats.close_code = close;
        let ended = Ended {
            stats: self.stats,
            open: self.started.elapsed(),
        };
        if let Some(watcher) = self.watcher.take() {
            watcher.end(ended);
        }
    }

    /// Relays until either side closes; the close code.
    async fn relay(&mut self, mut socket: Socket) -> u16 {
        loop {
            let overflow = self.link.overflow.clone();
            tokio::select! {
                incoming = socket.next() => {
                    if let Some(code) = self.client_sent(&mut socket, incoming).await {
                        return code;
                    }
                }
                outgoing = self.link.outgoing.recv() => match outgoing {
                    Some(WsFrame::Message(message)) => {
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
                _ = tokio::time::sleep_until(self.idle_until) => {
                    return self.close(&mut socket, close_code::GOING_AWAY, "idle timeout").await;
                }
                _ = tokio::time::sleep_until(self.ends_at) => {
                    return self.close(&mut socket, close_code::POLICY, "connection lifetime reached").await;
                }
            }
        }
    }

    /// A message went either way: the connection is not idle.
    fn active(&mut self) {
        let idle = Duration::from_secs(self.limits.websocket_idle_s.into());
        self.idle_until = Instant::now() + idle;
    }

    /// Takes what the client sent: a message goes to the function, a close
    /// or an error ends the connection (its close code).
    async fn client_sent(
        &mut self,
        socket: &mut Socket,
        incoming: Option<Result<Message, tungstenite::Error>>,
    ) -> Option<u16> {
        match incoming {
            Some(Ok(Message::Text(text))) => {
                let message = WsMessage::Text(text.as_str().to_string());
                self.received(socket, message).await
            }
            Some(Ok(Message::Binary(bytes))) => {
                self.received(socket, WsMessage::Binary(bytes.to_vec()))
                    .await
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_string())
                });
                self.tell(code, &reason).await;
                // tungstenite answers the close; flushing sends it.
                let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
                Some(code)
            }
            Some(Ok(_)) => None,
            Some(Err(tungstenite::Error::Capacity(_))) => Some(
                self.close(socket, close_code::TOO_BIG, "message too big")
                    .await,
            ),
            Some(Err(_)) | None => Some(self.tell(close_code::ABNORMAL, "").await),
        }
    }

    /// Hands a client's message to the function; a close code when that
    /// ended the connection.
    async fn received(&mut self, socket: &mut Socket, message: WsMessage) -> Option<u16> {
        self.active();
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
    async fn send(&mut self, socket: &mut Socket, message: WsMessage) -> bool {
        let cost = message.queued_cost();
        self.stats.messages_out += 1;
        self.stats.bytes_out += message.len() as u64;
        let message = match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Binary(bytes) => Message::Binary(bytes.into()),
        };
        self.active();
        // A client that does not read cannot hold the connection past its
        // idle time or lifetime, nor past the function's backlog.
        let deadline = self.idle_until.min(self.ends_at);
        let overflow = self.link.overflow.clone();
        let sent = tokio::select! {
            sent = tokio::time::timeout_at(deadline, socket.send(message)) => matches!(sent, Ok(Ok(()))),
            _ = overflow.notified() => false,
        };
        self.link.written(cost);
        sent
    }

    /// Tells the function, then closes with `code` and `reason` and waits
    /// briefly for the client's answer: a client that saw the close can
    /// count on the function having seen it too.
    async fn close(&mut self, socket: &mut Socket, code: u16, reason: &str) -> u16 {
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
        if let Some(watcher) = self.watcher.as_mut() {
            watcher.event(&report);
        }
        Some(report)
    }
}
