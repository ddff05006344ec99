//! Outbound WebSockets: `new WebSocket("wss://…")` in a function.
//!
//! A connection is a subrequest: it counts against the invocation's
//! `max_subrequests`, the messages it receives against its
//! `max_subrequest_mb`, and its host's addresses are checked after DNS
//! against the same deny-by-default rules as `fetch` ([`NetRules`]). Each
//! connection is a task that relays frames through bounded channels (a
//! function that does not read stops the reading from the server); what
//! the function sends is held back at most as much as an inbound
//! connection's client may hold back. Connections close when the
//! invocation that opened them ends, or with their isolate.

use super::SocketLimits;
use crate::outbound::FetchBudget;
use deno_core::{op2, JsBuffer, OpState, ToJsBuffer};
use deno_error::JsErrorBox;
use futures::{SinkExt, StreamExt};
use isola_core::websocket::{close_code, WsFrame, WsMessage};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

pub use isola_core::net::NetRules;

/// Messages from a server waiting for the function, at most.
const INCOMING: usize = 16;

/// tungstenite's read buffer per connection.
const READ_BUFFER: usize = 4096;

/// How long a close waits for the server's answer.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One outbound connection, as the isolate holds it.
struct Client {
    outgoing: mpsc::UnboundedSender<WsFrame>,
    queued: Arc<AtomicUsize>,
    /// Taken by the read under way.
    incoming: Rc<RefCell<Option<mpsc::Receiver<WsFrame>>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The isolate's outbound connections, in its `OpState`.
#[derive(Default)]
pub struct Clients {
    clients: HashMap<u32, Client>,
    next: u32,
    /// Where connections may go.
    pub rules: NetRules,
    /// Bounds of messages and backlogs.
    pub limits: SocketLimits,
}

impl Clients {
    /// Outbound connections bounded by `limits`, to where `rules` permit.
    pub fn new(rules: NetRules, limits: SocketLimits) -> Self {
        Self {
            rules,
            limits,
            ..Self::default()
        }
    }

    /// Closes every connection (the invocation that opened them ended).
    pub fn close_all(&mut self) {
        self.clients.clear();
    }
}

fn refused(message: impl Into<String>) -> JsErrorBox {
    JsErrorBox::type_error(message.into())
}

/// Connects to `url` (`ws:` or `wss:`) with `protocols`; the connection's
/// id and the protocol the server chose.
#[op2]
#[serde]
pub async fn op_isola_ws_connect(
    state: Rc<RefCell<OpState>>,
    #[string] url: String,
    #[serde] protocols: Vec<String>,
) -> Result<(u32, String), JsErrorBox> {
    let (budget, rules, limits) = admit(&state)?;
    let target = Target::parse(&url)?;
    let connect = async {
        let stream = connect_permitted(&target.host, target.port, &rules).await?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| refused(format!("invalid WebSocket request: {e}")))?;
        if !protocols.is_empty() {
            let value = protocols
                .join(", ")
                .parse()
                .map_err(|_| refused("invalid WebSocket protocols"))?;
            request
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message))
            // Eagerly allocated per connection: 4 KiB, not 128.
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0);
        if target.tls {
            let stream = tls_stream(stream, &target.host)?;
            handshake(request, stream, config).await
        } else {
            handshake(request, stream, config).await
        }
    };
    let Ok(handshaken) = tokio::time::timeout(budget.timeout, connect).await else {
        return Err(refused(format!(
            "WebSocket timed out: no handshake within {} ms",
            budget.timeout.as_millis()
        )));
    };
    let (socket_task, protocol, incoming, outgoing, queued) = handshaken?;
    // The relay is `Send`: it runs on the worker's runtime beside the isolate.
    let task = tokio::spawn(socket_task).abort_handle();
    let mut state = state.borrow_mut();
    let clients = state.borrow_mut::<Clients>();
    let id = clients.next;
    clients.next = clients.next.wrapping_add(1);
    let incoming = Rc::new(RefCell::new(Some(incoming)));
    let client = Client {
        outgoing,
        queued,
        incoming,
        task,
    };
    clients.clients.insert(id, client);
    Ok((id, protocol))
}

/// Counts a connection as a subrequest, refusing it past the invocation's
/// `max_subrequests` (and past as many open at once); the budget, the
/// rules and the limits it is made under.
fn admit(
    state: &Rc<RefCell<OpState>>,
) -> Result<(FetchBudget, NetRules, SocketLimits), JsErrorBox> {
    let state = state.borrow();
    let clients = state.borrow::<Clients>();
    let budget = state.borrow::<FetchBudget>().clone();
    let made = budget.subrequests.get() + 1;
    budget.subrequests.set(made);
    if made > budget.max_subrequests {
        return Err(refused(format!(
            "WebSocket refused: an invocation may make at most {} subrequests",
            budget.max_subrequests
        )));
    }
    if clients.clients.len() >= budget.max_subrequests as usize {
        return Err(refused(format!(
            "WebSocket refused: a function may hold at most {} outbound connections (its max_subrequests)",
            budget.max_subrequests
        )));
    }
    Ok((budget, clients.rules.clone(), clients.limits))
}

/// Where a WebSocket URL points.
struct Target {
    tls: bool,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Self, JsErrorBox> {
        let parsed =
            url::Url::parse(url).map_err(|e| refused(format!("invalid WebSocket URL: {e}")))?;
        let tls = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(refused(format!(
                    "a WebSocket URL is ws: or wss:, not {other}:"
                )))
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| refused("the WebSocket URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }
}

/// A TCP connection to the first permitted address of `host`.
async fn connect_permitted(
    host: &str,
    port: u16,
    rules: &NetRules,
) -> Result<tokio::net::TcpStream, JsErrorBox> {
    isola_core::net::connect_permitted(host, port, rules)
        .await
        .map_err(|error| match error {
            isola_core::net::ConnectError::Denied { .. } => {
                refused(format!("WebSocket refused: {error}"))
            }
            _ => refused(format!("WebSocket failed: {error}")),
        })
}

/// TLS over `stream` for `host`, with the web's root certificates.
fn tls_stream(
    stream: tokio::net::TcpStream,
    host: &str,
) -> Result<deno_tls::TlsStream<tokio::net::TcpStream>, JsErrorBox> {
    let config = deno_tls::create_client_config(deno_tls::TlsClientConfigOptions {
        root_cert_store: Some(deno_tls::create_default_root_cert_store()),
        ..Default::default()
    })
    .map_err(|e| refused(format!("WebSocket TLS failed: {e}")))?;
    let name = deno_tls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| refused(format!("WebSocket TLS failed: {e}")))?;
    let connection = deno_tls::rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| refused(format!("WebSocket TLS failed: {e}")))?;
    Ok(deno_tls::TlsStream::new_client_side(
        stream, connection, None,
    ))
}

type Handshaken = (
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    String,
    mpsc::Receiver<WsFrame>,
    mpsc::UnboundedSender<WsFrame>,
    Arc<AtomicUsize>,
);

/// The handshake, then the task that relays the connection.
async fn handshake<S>(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    config: WebSocketConfig,
) -> Result<Handshaken, JsErrorBox>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (socket, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| refused(format!("WebSocket failed: {e}")))?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (to_function, incoming) = mpsc::channel(INCOMING);
    let (outgoing, from_function) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let task = relay(socket, to_function, from_function, queued.clone());
    Ok((Box::pin(task), protocol, incoming, outgoing, queued))
}

/// What a read from the server means for the function.
enum Read {
    /// A message to hand over.
    Message(WsFrame),
    /// Nothing for the function (a ping, a pong).
    Nothing,
    /// The end, with the close to hand over.
    End(WsFrame),
}

fn read(incoming: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Read {
    let gone = |code: u16| {
        Read::End(WsFrame::Close {
            code,
            reason: String::new(),
        })
    };
    match incoming {
        Some(Ok(Message::Text(text))) => {
            Read::Message(WsFrame::Message(WsMessage::Text(text.as_str().to_string())))
        }
        Some(Ok(Message::Binary(bytes))) => {
            Read::Message(WsFrame::Message(WsMessage::Binary(bytes.to_vec())))
        }
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame.map_or((1005, String::new()), |f| {
                (u16::from(f.code), f.reason.as_str().to_string())
            });
            Read::End(WsFrame::Close { code, reason })
        }
        Some(Ok(_)) => Read::Nothing,
        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => gone(close_code::TOO_BIG),
        Some(Err(_)) | None => gone(close_code::ABNORMAL),
    }
}

/// Relays one connection until either side closes.
async fn relay<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    to_function: mpsc::Sender<WsFrame>,
    mut from_function: mpsc::UnboundedReceiver<WsFrame>,
    queued: Arc<AtomicUsize>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            incoming = socket.next() => match read(incoming) {
                Read::Message(frame) => {
                    if to_function.send(frame).await.is_err() {
                        return;
                    }
                }
                Read::Nothing => {}
                Read::End(close) => {
                    // tungstenite answers a close; flushing sends it.
                    let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
                    let _ = to_function.send(close).await;
                    return;
                }
            },
            outgoing = from_function.recv() => match outgoing {
                Some(WsFrame::Message(message)) => {
                    let cost = message.queued_cost();
                    let message = match message {
                        WsMessage::Text(text) => Message::Text(text.into()),
                        WsMessage::Binary(bytes) => Message::Binary(bytes.into()),
                    };
                    let sent = socket.send(message).await;
                    queued.fetch_sub(cost, Ordering::Relaxed);
                    if sent.is_err() {
                        let gone = WsFrame::Close { code: close_code::ABNORMAL, reason: String::new() };
                        let _ = to_function.send(gone).await;
                        return;
                    }
                }
                Some(WsFrame::Close { code, reason }) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.clone().into() };
                    let _ = tokio::time::timeout(CLOSE_WAIT, async {
                        if socket.close(Some(frame)).await.is_ok() {
                            while let Some(Ok(_)) = socket.next().await {}
                        }
                    })
                    .await;
                    let _ = to_function.send(WsFrame::Close { code, reason }).await;
                    return;
                }
                None => return,
            },
        }
    }
}

/// The next frame from connection `id`, as `[kind, data, code, reason]`
/// (kind 0 text, 1 binary, 2 close); `null` once it is gone. Received
/// bytes count against the invocation's subrequest bytes.
#[op2]
#[serde]
pub async fn op_isola_ws_next(
    state: Rc<RefCell<OpState>>,
    #[smi] id: u32,
) -> Option<(u8, Option<String>, Option<ToJsBuffer>, u16, String)> {
    let incoming = state
        .borrow()
        .borrow::<Clients>()
        .clients
        .get(&id)
        .map(|client| client.incoming.clone())?;
    // One reader at a time: the JavaScript side reads in one loop.
    let mut receiver = incoming.borrow_mut().take()?;
    let frame = receiver.recv().await;
    *incoming.borrow_mut() = Some(receiver);
    let budget = state.borrow().borrow::<FetchBudget>().clone();
    match frame {
        Some(WsFrame::Message(message)) => {
            let read = budget.bytes.get() + message.len() as u64;
            budget.bytes.set(read);
            if read > budget.max_bytes {
                drop_client(&state, id);
                return Some((
                    2,
                    None,
                    None,
                    close_code::TOO_BIG,
                    "this invocation may read at most its max_subrequest_mb from subrequests"
                        .into(),
                ));
            }
            Some(match message {
                WsMessage::Text(text) => (0, Some(text), None, 0, String::new()),
                WsMessage::Binary(bytes) => (1, None, Some(bytes.into()), 0, String::new()),
            })
        }
        Some(WsFrame::Close { code, reason }) => {
            drop_client(&state, id);
            Some((2, None, None, code, reason))
        }
        None => {
            drop_client(&state, id);
            Some((2, None, None, close_code::ABNORMAL, String::new()))
        }
    }
}

/// Drops connection `id` (its task is aborted).
fn drop_client(state: &Rc<RefCell<OpState>>, id: u32) {
    let client = state
        .borrow_mut()
        .borrow_mut::<Clients>()
        .clients
        .remove(&id);
    drop(client);
}

/// Sends a message on connection `id`: 0 queued, 1 closed, 2 too big, 3
/// the server reads too slowly (the connection is closed).
fn send(state: &mut OpState, id: u32, message: WsMessage) -> u32 {
    let clients = state.borrow_mut::<Clients>();
    let limits = clients.limits;
    if message.len() > limits.max_message {
        return 2;
    }
    let cost = message.queued_cost();
    let Some(client) = clients.clients.get(&id) else {
        return 1;
    };
    if client.queued.load(Ordering::Relaxed) + cost > limits.max_buffered {
        let _ = client.outgoing.send(WsFrame::Close {
            code: close_code::POLICY,
            reason: "the server reads too slowly".into(),
        });
        return 3;
    }
    client.queued.fetch_add(cost, Ordering::Relaxed);
    match client.outgoing.send(WsFrame::Message(message)) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Sends a text message on an outbound connection (see [`send`]).
#[op2(fast)]
pub fn op_isola_ws_client_send_text(
    state: &mut OpState,
    #[smi] id: u32,
    #[string] text: String,
) -> u32 {
    send(state, id, WsMessage::Text(text))
}

/// Sends a binary message on an outbound connection (see [`send`]).
#[op2]
pub fn op_isola_ws_client_send_binary(
    state: &mut OpState,
    #[smi] id: u32,
    #[buffer] data: JsBuffer,
) -> u32 {
    send(state, id, WsMessage::Binary(data.to_vec()))
}

/// Starts closing an outbound connection; its close arrives through
/// [`op_isola_ws_next`].
#[op2(fast)]
pub fn op_isola_ws_client_close(
    state: &mut OpState,
    #[smi] id: u32,
    #[smi] code: u32,
    #[string] reason: String,
) {
    let clients = state.borrow_mut::<Clients>();
    if let Some(client) = clients.clients.get(&id) {
        let code = u16::try_from(code).unwrap_or(close_code::NORMAL);
        let _ = client.outgoing.send(WsFrame::Close { code, reason });
    }
}
