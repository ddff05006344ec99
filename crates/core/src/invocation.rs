//! What a caller sends to run a function, what it gets back, and the
//! [`Invoker`] trait every execution backend implements.

use crate::{FunctionError, Limits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// One file of a function's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Path inside the deployment, relative, with `/` separators (`main.js`, `lib/util.js`).
    pub path: String,
    /// The file's bytes: a module's source text (UTF-8) or a Wasm binary
    /// (a string or `{"base64": …}` in JSON).
    #[serde(with = "crate::source::content")]
    pub code: Vec<u8>,
}

/// Everything needed to run one version of a function.
///
/// `id` identifies this exact code and configuration (a deployment id or a
/// content hash): warm isolates are pooled by it, so two sources with the
/// same `id` must be identical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSource {
    /// Identity of this version of the code: the warm-pool key.
    pub id: String,
    /// The function's name, shown in logs and stack traces.
    pub name: String,
    /// Path of the entry module among `files`.
    pub entry: String,
    /// The module files.
    pub files: Vec<SourceFile>,
    /// Limits for each invocation.
    pub limits: Limits,
    /// Environment variables and secrets, passed to the function as `env`.
    pub env: BTreeMap<String, String>,
    /// Name under which the function's KV namespace appears in `env`
    /// (e.g. `KV`), if it has one.
    #[serde(default)]
    pub kv_binding: Option<String>,
    /// Addresses or CIDR ranges the function may fetch although they are
    /// private (e.g. `10.0.0.5`, `192.168.1.0/24`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Which runtime runs it (told by its entry file).
    #[serde(default)]
    pub runtime: crate::RuntimeKind,
}

impl FunctionSource {
    /// A function made of one module, identified by the hash the caller gives.
    pub fn single_module(
        id: impl Into<String>,
        name: impl Into<String>,
        code: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            entry: "main.js".into(),
            files: vec![SourceFile {
                path: "main.js".into(),
                code: code.into().into_bytes(),
            }],
            limits: Limits::default(),
            env: BTreeMap::new(),
            kv_binding: None,
            allowed_hosts: Vec::new(),
            runtime: crate::RuntimeKind::Js,
        }
    }

    /// The text of the file at `path`, if the function has it as UTF-8.
    pub fn file(&self, path: &str) -> Option<&str> {
        std::str::from_utf8(self.file_bytes(path)?).ok()
    }

    /// The bytes of the file at `path`, if the function has it.
    pub fn file_bytes(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.code.as_slice())
    }
}

/// An HTTP request handed to a Workers-style `fetch` handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Absolute URL of the request.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The request body, or, when `rest` streams, its first bytes.
    pub body: Vec<u8>,
    /// The rest of a request body that arrives while the function runs.
    #[serde(skip)]
    pub rest: BodyStream,
}

/// The response a `fetch` handler returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The response body, or, when `rest` streams, nothing.
    pub body: Vec<u8>,
    /// The body of a response whose body was a stream: chunks as the
    /// function produces them.
    #[serde(skip)]
    pub rest: BodyStream,
    /// The WebSocket a `101` response accepted.
    #[serde(skip)]
    pub upgrade: crate::websocket::SocketUpgrade,
}

/// One chunk of a streamed body, or the error that ended the stream.
pub type BodyChunk = Result<Vec<u8>, String>;

/// A value handed over once, from whoever made it to whoever takes it
/// first; clones share it (and compare equal only to each other).
pub struct TakeOnce<T>(Option<Arc<std::sync::Mutex<Option<T>>>>);

impl<T> TakeOnce<T> {
    /// Holds `value` until it is taken.
    pub fn new(value: T) -> Self {
        Self(Some(Arc::new(std::sync::Mutex::new(Some(value)))))
    }

    /// Whether there was a value at all (taken or not).
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Takes the value (once).
    pub fn take(&self) -> Option<T> {
        self.0.as_ref()?.lock().ok()?.take()
    }
}

impl<T> Default for TakeOnce<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Clone for TakeOnce<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::fmt::Debug for TakeOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_some() {
            "TakeOnce(some)"
        } else {
            "TakeOnce(none)"
        })
    }
}

impl<T> PartialEq for TakeOnce<T> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<T> Eq for TakeOnce<T> {}

/// A body that arrives after the response head (or a request body that
/// arrives while the function runs): whoever takes it first reads it.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct BodyStream(TakeOnce<tokio::sync::mpsc::Receiver<BodyChunk>>);

impl BodyStream {
    /// A stream reading from `receiver`.
    pub fn new(receiver: tokio::sync::mpsc::Receiver<BodyChunk>) -> Self {
        Self(TakeOnce::new(receiver))
    }

    /// Whether there is a streamed body at all.
    pub fn is_streaming(&self) -> bool {
        self.0.is_some()
    }

    /// Takes the receiver (once).
    pub fn take(&self) -> Option<tokio::sync::mpsc::Receiver<BodyChunk>> {
        self.0.take()
    }
}

impl HttpResponse {
    /// The whole body: `body`, then every streamed chunk, at most `limit`
    /// bytes.
    pub async fn read_body(&self, limit: usize) -> Result<Vec<u8>, String> {
        read_whole(&self.body, &self.rest, limit, "response").await
    }
}

impl HttpRequest {
    /// The whole body, as [`HttpResponse::read_body`].
    pub async fn read_body(&self, limit: usize) -> Result<Vec<u8>, String> {
        read_whole(&self.body, &self.rest, limit, "request").await
    }
}

/// `first`, then every chunk `rest` streams, at most `limit` bytes.
async fn read_whole(
    first: &[u8],
    rest: &BodyStream,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut body = first.to_vec();
    if let Some(mut rest) = rest.take() {
        while let Some(chunk) = rest.recv().await {
            body.extend_from_slice(&chunk?);
            if body.len() > limit {
                return Err(format!("the {what} body is larger than {limit} bytes"));
            }
        }
    }
    Ok(body)
}

/// The input of an invocation: a JSON payload or an HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationInput {
    /// A JSON payload for `export default async (payload, ctx) => value`;
    /// a Workers-style function receives it as a `POST` with a JSON body.
    Json(serde_json::Value),
    /// An HTTP request for `export default { fetch(request, env, ctx) }`.
    Http(HttpRequest),
}

/// The successful result of an invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationOutput {
    /// The JSON value a JSON handler returned (`null` for `undefined`).
    Json(serde_json::Value),
    /// The response a `fetch` handler returned.
    Http(HttpResponse),
}

/// A request to run a function once.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Unique id of this invocation, for logs and records.
    pub id: String,
    /// The code to run.
    pub function: Arc<FunctionSource>,
    /// What to run it with.
    pub input: InvocationInput,
}

/// Severity of a captured console line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// `console.debug`
    Debug,
    /// `console.log`, `console.info`
    Info,
    /// `console.warn`
    Warn,
    /// `console.error`, unhandled rejections
    Error,
}

/// One line of a function's console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Severity.
    pub level: LogLevel,
    /// The formatted message, without a trailing newline.
    pub message: String,
}

/// What an invocation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationMetrics {
    /// Whether a new isolate had to be created for it.
    pub cold_start: bool,
    /// Wall-clock time from start to result, in microseconds.
    pub duration_us: u64,
    /// CPU time charged to the function, in microseconds.
    pub cpu_us: u64,
    /// Heap in use (V8 heap plus external memory) when it ended, in bytes.
    pub peak_heap_bytes: u64,
}

impl InvocationMetrics {
    /// The wall-clock duration.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.duration_us)
    }
}

/// How an invocation ended, with its logs and costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The function's result or the error it ended with.
    pub result: Result<InvocationOutput, FunctionError>,
    /// Console output and reported problems, in order.
    pub logs: Vec<LogEntry>,
    /// Costs.
    pub metrics: InvocationMetrics,
}

impl Outcome {
    /// An outcome that never reached the function.
    pub fn failed(error: FunctionError) -> Self {
        Self {
            result: Err(error),
            logs: Vec::new(),
            metrics: InvocationMetrics::default(),
        }
    }
}

/// A boxed future, as returned by [`Invoker::invoke`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs invocations. The local V8 executor implements it today; a Wasm
/// runtime and a remote worker reached over a message bus implement the same
/// trait, so callers never depend on where a function runs.
pub trait Invoker: Send + Sync + 'static {
    /// Runs one invocation to its end. Never panics on bad input: every
    /// failure comes back as an [`Outcome`] with an error.
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome>;

    /// Loads a function version without invoking it: compiles, links and
    /// evaluates its modules, and keeps the instance warm. An error here is
    /// what the first invocation would have failed with (a syntax error with
    /// its line and column, a missing import, no default export).
    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>>;

    /// Drops every warm instance of the given function version, so that its
    /// next invocation starts cold. Used when a deployment is replaced.
    fn evict(&self, function_id: &str);

    /// Warm instances and the memory they hold, for metrics.
    fn stats(&self) -> InvokerStats {
        InvokerStats::default()
    }

    /// The nodes whose runtimes this invoker uses, as it last heard of
    /// them: empty for a node running its invocations itself.
    fn nodes(&self) -> Vec<NodeInfo> {
        Vec::new()
    }

    /// Queues `invocation` (of deployment `version`) to run later, and
    /// returns once it is stored durably: from then on it is not lost. Its
    /// record is written when it has run. Only a cluster queues.
    fn enqueue(
        &self,
        invocation: Invocation,
        version: u32,
    ) -> BoxFuture<'_, Result<(), FunctionError>> {
        let _ = (invocation, version);
        Box::pin(async {
            Err(FunctionError::new(
                crate::ErrorCode::InvalidInput,
                "asynchronous invocations need a cluster (isola serve --nats)",
            ))
        })
    }

    /// Where the queued invocation `id` stands (`None`: no such queued
    /// invocation is known, or it was forgotten). Only a cluster queues.
    fn queued(
        &self,
        id: &str,
    ) -> BoxFuture<'_, Result<Option<crate::QueuedInvocation>, FunctionError>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }
}

/// A node of a cluster, as an [`Invoker`] last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id (new at each start).
    pub id: String,
    /// Whether it runs invocations (a worker).
    pub runs_invocations: bool,
    /// Whether it answers HTTP (a gateway).
    pub serves_http: bool,
    /// Invocations it was running.
    pub in_flight: u32,
    /// Slices of the functions the cluster's assigner gave it.
    #[serde(default)]
    pub slices: u32,
    /// Whether it computed the assignment in force.
    #[serde(default)]
    pub assigner: bool,
}

/// Gauges an [`Invoker`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokerStats {
    /// Warm (idle) instances held.
    pub warm_instances: u64,
    /// Memory they hold, in bytes.
    pub warm_memory_bytes: u64,
    /// Instances created so far.
    pub cold_starts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_module_sources_find_their_entry() {
        let source = FunctionSource::single_module("abc", "hello", "export default () => 1");
        assert_eq!(source.file(&source.entry), Some("export default () => 1"));
        assert_eq!(source.file("other.js"), None);
    }
}
