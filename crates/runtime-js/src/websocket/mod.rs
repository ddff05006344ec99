//! WebSockets inside an isolate: the ends of the `WebSocketPair`s a
//! function made (`js/websocket.js`), and the ops through which its server
//! ends send and close.
//!
//! Each end queues what the function sends on an unbounded channel whose
//! bytes are counted ([`SocketLink::buffered`]): past a bound per
//! connection the client is too slow and its connection is dropped, and
//! all connections of the isolate together may hold back at most the
//! function's memory limit. The receiving half waits here until the
//! function's `101` response takes it into its [`SocketLink`].

pub mod client;

use deno_core::{op2, JsBuffer, OpState};
use isola_core::websocket::{close_code, SocketLink, WsFrame, WsMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// One end of a pair the function holds.
struct End {
    outgoing: mpsc::UnboundedSender<WsFrame>,
    buffered: Arc<AtomicUsize>,
    overflow: Arc<Notify>,
    /// The receiving half, until a response takes it.
    pending: Option<mpsc::UnboundedReceiver<WsFrame>>,
    /// Closed by either side: sends are refused, but the end is kept (and
    /// counted) until its connection's relay has let go of it.
    closed: bool,
}

impl End {
    /// Gives back to `total` what this end queued and its relay never
    /// wrote: only once no relay holds it (gone, or never linked).
    fn release(&self, total: &AtomicUsize) {
        total.fetch_sub(self.buffered.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// The isolate's sockets, in its `OpState`.
#[derive(Default)]
pub struct Sockets {
    ends: HashMap<u32, End>,
    next: u32,
    /// Bytes queued over all ends, not written yet.
    total: Arc<AtomicUsize>,
    limits: SocketLimits,
}

/// What bounds an isolate's sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketLimits {
    /// Most ends at once.
    pub max_ends: usize,
    /// Largest message, in bytes.
    pub max_message: usize,
    /// Most bytes one connection may hold back.
    pub max_buffered: usize,
    /// Most bytes all connections together may hold back.
    pub max_buffered_total: usize,
}

impl SocketLimits {
    /// The bounds for a function with `limits`.
    pub fn of(limits: &isola_core::Limits) -> Self {
        let max_message = limits.websocket_message_bytes();
        Self {
            // Pairs being made besides the connections open.
            max_ends: limits.websocket_connections as usize + 16,
            max_message,
            max_buffered: (2 * max_message).max(1 << 20),
            max_buffered_total: limits.memory_bytes(),
        }
    }
}

/// What a send did, as the JavaScript side reads it.
#[repr(u32)]
enum Sent {
    Queued = 0,
    /// The socket is closed (or unknown).
    Closed = 1,
    /// The message is larger than the limit.
    TooBig = 2,
    /// The client reads too slowly: its connection was dropped.
    Overflow = 3,
}

impl Sockets {
    /// Sockets bounded by `limits`.
    pub fn new(limits: SocketLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn pair(&mut self) -> Option<u32> {
        if self.ends.len() >= self.limits.max_ends {
            return None;
        }
        let (outgoing, receiver) = mpsc::unbounded_channel();
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.ends.insert(
            id,
            End {
                outgoing,
                buffered: Arc::default(),
                overflow: Arc::default(),
                pending: Some(receiver),
                closed: false,
            },
        );
        Some(id)
    }

    fn send(&mut self, id: u32, message: WsMessage) -> Sent {
        if message.len() > self.limits.max_message {
            return Sent::TooBig;
        }
        let cost = message.queued_cost();
        let Some(end) = self.ends.get_mut(&id).filter(|end| !end.closed) else {
            return Sent::Closed;
        };
        let queued = end.buffered.load(Ordering::Relaxed) + cost;
        let total = self.total.load(Ordering::Relaxed) + cost;
        if queued > self.limits.max_buffered || total > self.limits.max_buffered_total {
            end.overflow.notify_one();
            end.closed = true;
            return Sent::Overflow;
        }
        end.buffered.fetch_add(cost, Ordering::Relaxed);
        self.total.fetch_add(cost, Ordering::Relaxed);
        if end.outgoing.send(WsFrame::Message(message)).is_err() {
            // No relay holds it any more: nothing will write this.
            end.closed = true;
            end.release(&self.total);
            return Sent::Closed;
        }
        Sent::Queued
    }

    /// Closes the socket `id` with `code` and `reason`.
    pub fn close(&mut self, id: u32, code: u16, reason: String) {
        if let Some(end) = self.ends.get_mut(&id).filter(|end| !end.closed) {
            end.closed = true;
            let _ = end.outgoing.send(WsFrame::Close { code, reason });
        }
    }

    /// Closes every socket, e.g. with 1012 when the function is redeployed.
    pub fn close_all(&mut self, code: u16, reason: &str) {
        for end in self.ends.values_mut().filter(|end| !end.closed) {
            end.closed = true;
            let _ = end.outgoing.send(WsFrame::Close {
                code,
                reason: reason.to_string(),
            });
        }
    }

    /// Socket `id`'s connection ended: it takes no more sends.
    pub fn forget(&mut self, id: u32) {
        if let Some(end) = self.ends.get_mut(&id) {
            end.closed = true;
        }
    }

    /// Connections open: linked ends whose relay still holds them (closing
    /// ones included); those let go of are forgotten now.
    pub fn open(&mut self) -> usize {
        let total = &self.total;
        self.ends.retain(|_, end| {
            let gone = end.pending.is_none() && end.outgoing.is_closed();
            if gone {
                end.release(total);
            }
            !gone
        });
        self.ends
            .values()
            .filter(|end| end.pending.is_none())
            .count()
    }

    /// Forgets pairs no response took (made and never returned).
    pub fn forget_unused(&mut self) {
        let total = &self.total;
        self.ends.retain(|_, end| {
            if end.pending.is_some() {
                end.release(total);
            }
            end.pending.is_none()
        });
    }

    /// The link of socket `id`, for the response that accepted it, with
    /// `events` as where the node sends what the client sends.
    pub fn link(
        &mut self,
        id: u32,
        events: mpsc::Sender<isola_core::websocket::SocketEvent>,
    ) -> Option<SocketLink> {
        let end = self.ends.get_mut(&id)?;
        let outgoing = end.pending.take()?;
        Some(SocketLink {
            socket: id,
            outgoing,
            buffered: end.buffered.clone(),
            buffered_total: self.total.clone(),
            overflow: end.overflow.clone(),
            events,
        })
    }
}

/// Makes a pair; its id, or -1 when the function holds as many as it may.
#[op2(fast)]
pub fn op_isola_ws_open(state: &mut OpState) -> i32 {
    state
        .borrow_mut::<Sockets>()
        .pair()
        .map_or(-1, |id| id as i32)
}

/// Sends a text message; what happened (see [`Sent`]).
#[op2(fast)]
pub fn op_isola_ws_send_text(state: &mut OpState, #[smi] id: u32, #[string] text: String) -> u32 {
    state
        .borrow_mut::<Sockets>()
        .send(id, WsMessage::Text(text)) as u32
}

/// Sends a binary message; what happened (see [`Sent`]).
#[op2]
pub fn op_isola_ws_send_binary(
    state: &mut OpState,
    #[smi] id: u32,
    #[buffer] data: JsBuffer,
) -> u32 {
    state
        .borrow_mut::<Sockets>()
        .send(id, WsMessage::Binary(data.to_vec())) as u32
}

/// Closes a socket with a code (1000, or 3000–4999) and a reason.
#[op2(fast)]
pub fn op_isola_ws_close(
    state: &mut OpState,
    #[smi] id: u32,
    #[smi] code: u32,
    #[string] reason: String,
) {
    let code = u16::try_from(code).unwrap_or(close_code::NORMAL);
    state.borrow_mut::<Sockets>().close(id, code, reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    use isola_core::websocket::FRAME_COST;

    /// Messages of at most 4 bytes; two of 4 bytes fit one client's backlog,
    /// three fit the isolate's.
    fn limits() -> SocketLimits {
        SocketLimits {
            max_ends: 2,
            max_message: 4,
            max_buffered: 2 * (4 + FRAME_COST),
            max_buffered_total: 3 * (4 + FRAME_COST),
        }
    }

    #[test]
    fn ends_are_bounded() {
        let mut sockets = Sockets::new(limits());
        assert!(sockets.pair().is_some() && sockets.pair().is_some());
        assert!(sockets.pair().is_none());
        sockets.forget_unused();
        assert!(sockets.ends.is_empty());
    }

    #[test]
    fn a_slow_client_is_dropped_and_sizes_are_checked() {
        let mut sockets = Sockets::new(limits());
        let id = sockets.pair().unwrap();
        let (events, _rx) = mpsc::channel(1);
        let link = sockets.link(id, events).unwrap();
        let text = |t: &str| WsMessage::Text(t.into());
        assert!(matches!(sockets.send(id, text("12345")), Sent::TooBig));
        assert!(matches!(sockets.send(id, text("1234")), Sent::Queued));
        assert!(matches!(sockets.send(id, text("1234")), Sent::Queued));
        assert_eq!(sockets.open(), 1);
        link.written(text("1234").queued_cost());
        assert!(matches!(sockets.send(id, text("1234")), Sent::Queued));
        // Two held back: even an empty message is more than it may hold.
        assert!(matches!(sockets.send(id, text("")), Sent::Overflow));
        assert!(matches!(sockets.send(id, text("1")), Sent::Closed));
        // Still counted until its relay lets go; then what it never wrote
        // no longer counts against the isolate.
        assert_eq!(sockets.open(), 1);
        drop(link);
        assert_eq!(sockets.open(), 0);
        assert_eq!(sockets.total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn empty_messages_are_not_free() {
        let mut sockets = Sockets::new(limits());
        let id = sockets.pair().unwrap();
        let (events, _rx) = mpsc::channel(1);
        let _link = sockets.link(id, events).unwrap();
        let sent = (0..1000)
            .take_while(|_| {
                matches!(
                    sockets.send(id, WsMessage::Text(String::new())),
                    Sent::Queued
                )
            })
            .count();
        assert_eq!(sent, 2);
    }

    #[test]
    fn closing_sends_the_code_and_keeps_counting_until_the_relay_ends() {
        let mut sockets = Sockets::new(limits());
        let id = sockets.pair().unwrap();
        let (events, _rx) = mpsc::channel(1);
        let mut link = sockets.link(id, events).unwrap();
        sockets.close_all(close_code::SERVICE_RESTART, "redeployed");
        assert_eq!(
            link.outgoing.try_recv().unwrap(),
            WsFrame::Close {
                code: 1012,
                reason: "redeployed".into()
            }
        );
        assert!(matches!(
            sockets.send(id, WsMessage::Text("x".into())),
            Sent::Closed
        ));
        assert_eq!(sockets.open(), 1);
        drop(link);
        assert_eq!(sockets.open(), 0);
    }
}
