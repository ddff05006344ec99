//! WebSocket connections between a client and a function.
//!
//! A function accepts a connection by answering an upgrade request with
//! `101` and one end of a `WebSocketPair`; its [`HttpResponse`] then
//! carries a [`SocketUpgrade`] holding the [`SocketLink`]: the frames the
//! function sends (bounded in bytes by [`SocketLink::buffered`]) and where
//! the node sends what the client sends, one [`SocketEvent`] at a time,
//! each answered with what running it cost ([`EventReport`]).
//!
//! [`HttpResponse`]: crate::HttpResponse

use crate::{FunctionError, LogEntry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl WsMessage {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the message costs while it waits to be written: its bytes plus
    /// [`FRAME_COST`], so that empty messages are not free.
    pub fn queued_cost(&self) -> usize {
        self.len() + FRAME_COST
    }
}

/// What a queued frame costs besides its payload (the channel's node, the
/// frame's header and allocation), roughly.
pub const FRAME_COST: usize = 64;

/// What travels on a connection, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A message.
    Message(WsMessage),
    /// The closing handshake (or the end of the connection), with its code
    /// and reason.
    Close {
        /// The close code (1000 normal, 1006 gone without a close, …).
        code: u16,
        /// The reason, at most 123 bytes.
        reason: String,
    },
}

/// Close codes the node uses (RFC 6455 §7.4 and IANA's registry).
pub mod close_code {
    /// A normal close.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (the node shuts down, idle timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// The other side broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// The connection ended without a closing handshake.
    pub const ABNORMAL: u16 = 1006;
    /// A policy was broken: the client reads too slowly, lifetime reached.
    pub const POLICY: u16 = 1008;
    /// A message was larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The function failed (broke a limit, threw while loading).
    pub const INTERNAL: u16 = 1011;
    /// The function was redeployed or its isolate evicted.
    pub const SERVICE_RESTART: u16 = 1012;
}

/// What the client sent, for the function's socket `socket`, with where
/// to report how running it went.
#[derive(Debug)]
pub struct SocketEvent {
    /// The socket's id inside its isolate.
    pub socket: u32,
    /// A message, or the client's close.
    pub frame: WsFrame,
    /// Answered once the function's listeners ran.
    pub done: oneshot::Sender<EventReport>,
}

/// What running one event cost, and how it ended.
#[derive(Debug, Default)]
pub struct EventReport {
    /// CPU time charged, in microseconds.
    pub cpu_us: u64,
    /// What the listeners printed.
    pub logs: Vec<LogEntry>,
    /// Why the function failed, if it did (the connection is then closed).
    pub error: Option<FunctionError>,
}

/// Both directions of one accepted connection, for the node to relay.
#[derive(Debug)]
pub struct SocketLink {
    /// The socket's id inside its isolate.
    pub socket: u32,
    /// Frames the function sends, in order; a `Close` (or the channel's
    /// end) ends the connection.
    pub outgoing: mpsc::UnboundedReceiver<WsFrame>,
    /// Bytes queued in `outgoing` and not written yet: the function's
    /// side adds, the node subtracts what it wrote.
    pub buffered: Arc<AtomicUsize>,
    /// The same, summed over every connection of the isolate.
    pub buffered_total: Arc<AtomicUsize>,
    /// Notified when the function queued more than a client may hold back:
    /// the node drops the connection.
    pub overflow: Arc<Notify>,
    /// Where the node sends what the client sends.
    pub events: mpsc::Sender<SocketEvent>,
}

impl SocketLink {
    /// Marks a queued message (its [`WsMessage::queued_cost`]) as written.
    pub fn written(&self, cost: usize) {
        self.buffered.fetch_sub(cost, Ordering::Relaxed);
        self.buffered_total.fetch_sub(cost, Ordering::Relaxed);
    }
}

/// The accepted connection a `101` response carries: whoever takes it
/// first relays it.
pub type SocketUpgrade = crate::TakeOnce<SocketLink>;

/// Whether request headers ask for a WebSocket (`Upgrade: websocket`).
pub fn is_websocket_upgrade(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("upgrade")
            && value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised() {
        let asks = |v: &str| is_websocket_upgrade(&[("Upgrade".into(), v.into())]);
        assert!(asks("websocket"));
        assert!(asks("WebSocket"));
        assert!(asks("h2c, websocket"));
        assert!(!asks("h2c"));
        assert!(!is_websocket_upgrade(&[(
            "connection".into(),
            "upgrade".into()
        )]));
    }

    #[test]
    fn an_upgrade_is_taken_once() {
        let (_out, outgoing) = mpsc::unbounded_channel();
        let (events, _in) = mpsc::channel(1);
        let upgrade = SocketUpgrade::new(SocketLink {
            socket: 7,
            outgoing,
            buffered: Arc::default(),
            buffered_total: Arc::default(),
            overflow: Arc::default(),
            events,
        });
        let copy = upgrade.clone();
        assert_eq!(upgrade, copy);
        assert_eq!(copy.take().map(|l| l.socket), Some(7));
        assert!(upgrade.take().is_none());
    }
}
