//! The `isola_runtime` deno_core extension: isola's bootstrap JavaScript and
//! the few ops it exposes on purpose.
//!
//! This file is compiled twice: into the library, and into `build.rs`
//! (through `#[path]`), where it makes the startup snapshot. Both must see
//! exactly the same extensions, in the same order, with the same ops and op
//! middleware, or the snapshot will not load.

use deno_core::{extension, op2, JsBuffer, OpDecl, OpState, ToJsBuffer};
use deno_error::JsErrorBox;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// Console lines captured during the current invocation, as
/// `(level, message)`; level as given by deno_web's `Console`: debug 0,
/// log/info 1, warn 2, error 3, trace 4.
#[derive(Default, Clone)]
pub struct ConsoleBuffer(pub Rc<RefCell<ConsoleLines>>);

/// The captured lines and how many bytes they hold.
#[derive(Default)]
pub struct ConsoleLines {
    /// `(level, message)` in order.
    pub lines: Vec<(u8, String)>,
    /// Total bytes kept, to bound memory.
    pub bytes: usize,
    /// Lines dropped because the buffer was full.
    pub dropped: usize,
}

/// Most console output kept for one invocation.
pub const MAX_CONSOLE_BYTES: usize = 256 * 1024;

/// Most console lines kept for one invocation.
pub const MAX_CONSOLE_LINES: usize = 1000;

/// What a line costs besides its text (its record, its row): so that empty
/// lines are not free.
pub const CONSOLE_LINE_OVERHEAD: usize = 64;

#[op2(fast)]
fn op_isola_log(state: &mut OpState, #[smi] level: u32, #[string] message: &str) {
    let buffer = state.borrow::<ConsoleBuffer>().0.clone();
    let mut buffer = buffer.borrow_mut();
    let message = message.strip_suffix('\n').unwrap_or(message);
    let cost = message.len() + CONSOLE_LINE_OVERHEAD;
    if buffer.bytes + cost > MAX_CONSOLE_BYTES || buffer.lines.len() >= MAX_CONSOLE_LINES {
        buffer.dropped += 1;
        return;
    }
    buffer.bytes += cost;
    buffer.lines.push((level.min(4) as u8, message.to_owned()));
}

/// What a KV operation returns.
pub type KvFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>>>>;

/// Keys with their versions, and the cursor of the next page.
pub type KvPage = (Vec<(String, u64)>, Option<String>);

/// A write: `(key, Some(value))` puts (with an optional TTL in seconds),
/// `(key, None)` deletes.
pub type KvWrite = (String, Option<Vec<u8>>, Option<u64>);

/// A function's KV namespace, as the ops see it. The runtime implements it
/// over `isola_kv::KvStore`, bound to the function's own namespace.
pub trait KvHost {
    /// The value and version of `key`.
    fn get(&self, key: String) -> KvFuture<Option<(Vec<u8>, u64)>>;
    /// Keys with `prefix`, after `cursor`; and the next cursor.
    fn list(&self, prefix: String, limit: usize, cursor: Option<String>) -> KvFuture<KvPage>;
    /// Applies mutations `(key, Some(value) = put | None = delete, ttl)` if
    /// every `(key, version)` check holds; the new version, or `None`.
    fn atomic(
        &self,
        checks: Vec<(String, Option<u64>)>,
        mutations: Vec<KvWrite>,
    ) -> KvFuture<Option<u64>>;
}

/// The KV namespace of the isolate's function, when it has a KV binding.
#[derive(Clone, Default)]
pub struct KvAccess(pub Option<Rc<dyn KvHost>>);

fn kv_host(state: &Rc<RefCell<OpState>>) -> Result<Rc<dyn KvHost>, JsErrorBox> {
    state
        .borrow()
        .borrow::<KvAccess>()
        .0
        .clone()
        .ok_or_else(|| JsErrorBox::type_error("this function has no KV binding"))
}

fn parse_version(version: Option<String>) -> Result<Option<u64>, JsErrorBox> {
    version
        .map(|v| {
            v.parse()
                .map_err(|_| JsErrorBox::type_error(format!("invalid KV version {v:?}")))
        })
        .transpose()
}

/// A value read from KV.
#[derive(serde::Serialize)]
struct KvEntryOut {
    value: ToJsBuffer,
    version: String,
}

#[op2]
#[serde]
async fn op_isola_kv_get(
    state: Rc<RefCell<OpState>>,
    #[string] key: String,
) -> Result<Option<KvEntryOut>, JsErrorBox> {
    let entry = kv_host(&state)?
        .get(key)
        .await
        .map_err(JsErrorBox::type_error)?;
    Ok(entry.map(|(value, version)| KvEntryOut {
        value: value.into(),
        version: version.to_string(),
    }))
}

/// A page of keys.
#[derive(serde::Serialize)]
struct KvListOut {
    keys: Vec<(String, String)>,
    cursor: Option<String>,
}

#[op2]
#[serde]
async fn op_isola_kv_list(
    state: Rc<RefCell<OpState>>,
    #[string] prefix: String,
    #[smi] limit: u32,
    #[string] cursor: Option<String>,
) -> Result<KvListOut, JsErrorBox> {
    let (keys, cursor) = kv_host(&state)?
        .list(prefix, limit as usize, cursor)
        .await
        .map_err(JsErrorBox::type_error)?;
    Ok(KvListOut {
        keys: keys.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        cursor,
    })
}

/// One mutation from JavaScript: a put when `value` is set, else a delete.
#[derive(serde::Deserialize)]
struct KvMutationIn {
    key: String,
    value: Option<JsBuffer>,
    ttl: Option<u64>,
}

#[op2]
#[string]
async fn op_isola_kv_atomic(
    state: Rc<RefCell<OpState>>,
    #[serde] checks: Vec<(String, Option<String>)>,
    #[serde] mutations: Vec<KvMutationIn>,
) -> Result<Option<String>, JsErrorBox> {
    let checks = checks
        .into_iter()
        .map(|(key, version)| Ok((key, parse_version(version)?)))
        .collect::<Result<Vec<_>, JsErrorBox>>()?;
    let mutations = mutations
        .into_iter()
        .map(|m| (m.key, m.value.map(|v| v.to_vec()), m.ttl))
        .collect();
    let committed = kv_host(&state)?
        .atomic(checks, mutations)
        .await
        .map_err(JsErrorBox::type_error)?;
    Ok(committed.map(|v| v.to_string()))
}

/// Where streamed response bodies go: a channel per streamed response, by
/// id, opened by the bootstrap only when a response has a stream body.
#[derive(Default)]
pub struct BodySinks {
    /// Senders by id.
    pub senders: std::collections::HashMap<u32, tokio::sync::mpsc::Sender<Result<Vec<u8>, String>>>,
    /// The receiving end of the channel opened last, for the host to take
    /// with the response head.
    pub opened: Option<tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>>,
    /// The next id.
    pub next: u32,
}

/// Chunks of a streamed response body in flight to the host, at most.
const SINK_CHUNKS: usize = 16;

/// Opens the channel a streamed response body is sent through; returns its
/// id (the host takes the receiving end with the response head).
#[op2(fast)]
#[smi]
fn op_isola_body_open(state: &mut OpState) -> u32 {
    let (sender, receiver) = tokio::sync::mpsc::channel(SINK_CHUNKS);
    let sinks = state.borrow_mut::<BodySinks>();
    let id = sinks.next;
    sinks.next = sinks.next.wrapping_add(1);
    sinks.senders.insert(id, sender);
    sinks.opened = Some(receiver);
    id
}

/// Sends one chunk of a streamed response body; `false` when nobody reads
/// it any more (the client went away).
#[op2]
async fn op_isola_body_send(
    state: Rc<RefCell<OpState>>,
    #[smi] id: u32,
    #[buffer] chunk: JsBuffer,
) -> bool {
    let sender = state
        .borrow()
        .borrow::<BodySinks>()
        .senders
        .get(&id)
        .cloned();
    match sender {
        Some(sender) => sender.send(Ok(chunk.to_vec())).await.is_ok(),
        None => false,
    }
}

/// Ends a streamed response body, with the error that ended it, if any.
#[op2]
fn op_isola_body_end(state: &mut OpState, #[smi] id: u32, #[string] error: Option<String>) {
    if let Some(sender) = state.borrow_mut::<BodySinks>().senders.remove(&id) {
        if let Some(error) = error {
            let _ = sender.try_send(Err(error));
        }
    }
}

/// Streamed request bodies waiting to be read, by id: the first bytes (if
/// any) and the channel bringing the rest.
#[derive(Default)]
pub struct RequestBodies {
    /// Bodies by id.
    #[allow(clippy::type_complexity)]
    pub streams: std::collections::HashMap<
        u32,
        (
            Option<Vec<u8>>,
            tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>,
        ),
    >,
    /// The next id.
    pub next: u32,
}

/// The next chunk of a streamed request body; `null` at its end.
#[op2]
#[buffer]
async fn op_isola_body_recv(
    state: Rc<RefCell<OpState>>,
    #[smi] id: u32,
) -> Result<Option<Vec<u8>>, JsErrorBox> {
    let taken = state
        .borrow_mut()
        .borrow_mut::<RequestBodies>()
        .streams
        .remove(&id);
    let Some((first, mut rest)) = taken else {
        return Ok(None);
    };
    if let Some(first) = first {
        state
            .borrow_mut()
            .borrow_mut::<RequestBodies>()
            .streams
            .insert(id, (None, rest));
        return Ok(Some(first));
    }
    let chunk = rest.recv().await;
    match chunk {
        Some(Ok(bytes)) => {
            state
                .borrow_mut()
                .borrow_mut::<RequestBodies>()
                .streams
                .insert(id, (None, rest));
            Ok(Some(bytes))
        }
        Some(Err(error)) => Err(JsErrorBox::type_error(error)),
        None => Ok(None),
    }
}

/// Charges (positive) or releases (negative) native memory the bootstrap
/// knows a web API holds outside V8 (a compressor's state), in KiB; set by
/// the runtime to the isolate's memory guard.
#[derive(Default)]
pub struct NativeMemory(pub Option<Box<dyn Fn(i64)>>);

#[op2(fast)]
fn op_isola_native_memory(state: &mut OpState, #[smi] kib: i32) {
    if let Some(charge) = &state.borrow::<NativeMemory>().0 {
        charge(kib as i64 * 1024);
    }
}

/// Ops that a sandboxed function must never reach: disabled everywhere.
const DISABLED_OPS: &[&str] = &[
    // Accepts a user proxy, CA certificates, local address and Host override.
    "op_fetch_custom_client",
    // Prints to the host's stdout/stderr, bypassing the captured console.
    "op_print",
];

/// Disables the ops listed in [`DISABLED_OPS`], and sends fetches through
/// isola's limits (see `outbound`).
pub fn op_middleware(op: OpDecl) -> OpDecl {
    if DISABLED_OPS.contains(&op.name) {
        op.disable()
    } else if op.name == "op_fetch_send" {
        op.with_implementation_from(&crate::outbound::op_isola_fetch_send())
    } else {
        op
    }
}

extension!(
    isola_runtime,
    deps = [deno_webidl, deno_web, deno_crypto, deno_fetch],
    ops = [
        op_isola_log,
        op_isola_kv_get,
        op_isola_kv_list,
        op_isola_kv_atomic,
        op_isola_body_open,
        op_isola_body_send,
        op_isola_body_end,
        op_isola_body_recv,
        op_isola_native_memory,
        crate::outbound::op_isola_offload_begin,
        crate::outbound::op_isola_offload_end,
        crate::websocket::op_isola_ws_open,
        crate::websocket::op_isola_ws_send_text,
        crate::websocket::op_isola_ws_send_binary,
        crate::websocket::op_isola_ws_close,
        crate::websocket::client::op_isola_ws_connect,
        crate::websocket::client::op_isola_ws_next,
        crate::websocket::client::op_isola_ws_client_send_text,
        crate::websocket::client::op_isola_ws_client_send_binary,
        crate::websocket::client::op_isola_ws_client_close,
    ],
    esm_entry_point = "ext:isola_runtime/bootstrap.js",
    esm = [dir "js", "bootstrap.js", "console.js", "websocket.js"],
    lazy_loaded_js = [dir "js", "ext:deno_net/02_tls.js" = "stub_tls.js"],
    options = { permissions: deno_permissions::PermissionsContainer },
    middleware = op_middleware,
    state = |state, options| {
        state.put(options.permissions);
        state.put(ConsoleBuffer::default());
        state.put(KvAccess::default());
        state.put(BodySinks::default());
        state.put(RequestBodies::default());
        state.put(NativeMemory::default());
        state.put(crate::websocket::Sockets::default());
        state.put(crate::websocket::client::Clients::default());
        state.put(crate::outbound::FetchBudget::default());
        state.put(crate::outbound::Offloaded::new(Default::default(), None));
    },
);

/// The full, ordered list of extensions every isola isolate runs with. The
/// snapshot is made from this list; runtimes are created with it again.
pub fn extensions(
    permissions: deno_permissions::PermissionsContainer,
    blob_store: std::sync::Arc<dyn deno_web::BlobStoreTrait>,
) -> Vec<deno_core::Extension> {
    vec![
        deno_webidl::deno_webidl::init(),
        deno_web::deno_web::init(
            blob_store,
            None,
            false,
            deno_web::InMemoryBroadcastChannel::default(),
        ),
        deno_crypto::deno_crypto::init(None),
        deno_fetch::deno_fetch::init(deno_fetch::Options {
            user_agent: concat!("isola/", env!("CARGO_PKG_VERSION")).to_string(),
            ..Default::default()
        }),
        isola_runtime::init(permissions),
    ]
}
