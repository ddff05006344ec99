//! isola's cluster: nodes that share work over NATS (issue #14).
//!
//! This first slice carries invocations between nodes: a gateway's
//! [`NatsInvoker`] is an `Invoker` like the local runtimes, that sends each
//! invocation (as an `isola_core::wire` message) to the workers' queue
//! group and answers with the outcome a worker sends back; [`serve_worker`]
//! is a worker's side, which runs what it receives on its own invoker.
//! The code never travels: a worker finds the deployment an invocation
//! names through its [`Deployments`] (the shared registry, in a cluster)
//! and refuses an invocation for a deployment it cannot find.
//!
//! `isola serve --nats URL --role gateway|worker|all` puts these together:
//! a gateway answers HTTP and sends invocations through [`NatsInvoker`],
//! checking deploys and running WebSocket upgrades (whose connection
//! cannot leave it) on its own runtimes; a worker runs
//! [`serve_worker`] with [`RegistryDeployments`].
//!
//! Bodies longer than one message, or streamed, follow in frames the
//! receiver pulls (`frames`). Not yet: placement (every worker takes any
//! function), heartbeats, a JetStream `KvStore`, records shared between
//! gateways, and async invocations.

pub mod assigner;
pub mod balance;
mod buckets;
mod deployments;
mod frames;
mod kv;
mod kvcodec;
pub mod members;
pub mod placement;
mod queued;
mod registry;
mod results;
mod snapshots;
mod worker;

pub use async_nats;
pub use deployments::RegistryDeployments;
pub use kv::JetStreamKv;
pub use queued::{serve_queued, serve_queued_with};
pub use registry::JetStreamRegistry;
pub use worker::{serve_worker, WorkerQueue, MAX_IN_FLIGHT};

use async_trait::async_trait;
use isola_core::wire;
use isola_core::{
    BoxFuture, ErrorCode, FunctionError, FunctionSource, Invocation, Invoker, InvokerStats, Outcome,
};
use std::sync::Arc;
use std::time::Duration;

/// The subject invocations are sent on.
pub const INVOKE_SUBJECT: &str = "isola.invoke";

/// The workers' queue group: each invocation goes to one of them.
pub const WORKERS: &str = "isola-workers";

/// Most body bytes an invocation or outcome carries in its message, and in
/// each frame of the rest: NATS refuses messages past its `max_payload`
/// (1 MiB by default).
pub const MAX_INLINE_BODY: usize = 768 << 10;

/// The header of a worker's answer that it took nothing (it is full).
pub(crate) const BUSY_HEADER: &str = "Isola-Busy";

/// Bytes of a message left for its headers (the `Isola-Body` subject).
pub(crate) const HEADERS_ROOM: usize = 4096;

/// How long past its wall-clock limit a gateway waits for a worker's
/// answer (queueing, the trip, the outcome's way back).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Messages a worker's client buffers before its loop takes them (each at
/// most one NATS payload): the loop takes them at once, answering "busy"
/// past its in-flight limit, so this rarely fills.
pub const SUBSCRIPTION_CAPACITY: usize = 64;

/// Connects to the cluster's NATS server at `url` (a user and password may
/// be in it; `tls://` for TLS), as `name` (shown in the server's
/// monitoring), with the credentials in `creds` if given. A server that
/// cannot be reached is an error at once, not retried.
pub async fn connect(
    url: &str,
    name: &str,
    creds: Option<&std::path::Path>,
) -> Result<async_nats::Client, async_nats::Error> {
    let options = match creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path).await?,
        None => async_nats::ConnectOptions::new(),
    };
    Ok(options
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(|event| async move {
            if let async_nats::Event::SlowConsumer(_) = event {
                tracing::warn!("NATS dropped messages for this node: it took them too slowly");
            }
        })
        .connect(url)
        .await?)
}

/// Where a worker finds the deployment an invocation names.
#[async_trait]
pub trait Deployments: Send + Sync + 'static {
    /// The deployment `deployment` (a `FunctionSource::id`) of `function`,
    /// if this node can load it.
    async fn find(&self, function: &str, deployment: &str) -> Option<Arc<FunctionSource>>;
}

/// The subject a worker takes invocations placed on it from.
pub fn direct_subject(worker: &str) -> String {
    format!("isola.invoke.node.{worker}")
}

/// Runs invocations on the workers of a cluster: on the function's slice
/// (`placement`) when the gateway knows the workers, else (or when the
/// chosen worker is gone) on any worker of the queue group.
pub struct NatsInvoker {
    client: async_nats::Client,
    members: Option<members::Members>,
    assignments: Option<assigner::Assignments>,
    outstanding: placement::Outstanding,
    concurrency: placement::Concurrency,
    /// This node's own runtimes, if it has them: they check deployments
    /// (`prepare`) and run WebSocket upgrades, whose connection stays on
    /// the node that accepted it.
    local: Option<Arc<dyn Invoker>>,
    /// Where queued invocations stand, opened on first use.
    results: tokio::sync::OnceCell<results::Results>,
}

impl NatsInvoker {
    /// Sends invocations through `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            members: None,
            assignments: None,
            outstanding: Default::default(),
            concurrency: Default::default(),
            local: None,
            results: Default::default(),
        }
    }

    async fn results(&self) -> Result<&results::Results, FunctionError> {
        let js = async_nats::jetstream::new(self.client.clone());
        self.results
            .get_or_try_init(|| results::Results::open(&js))
            .await
    }

    /// Places each function's invocations on its slice of `members`'
    /// workers.
    pub fn with_members(mut self, members: members::Members) -> Self {
        self.members = Some(members);
        self
    }

    /// Places each function's invocations on the workers the assigner gave
    /// its slice (falling back to rendezvous hashing).
    pub fn with_assignments(mut self, assignments: assigner::Assignments) -> Self {
        self.assignments = Some(assignments);
        self
    }

    /// The workers `function` may run on, of `workers` (alive): its
    /// slice's, as assigned (and as rendezvous hashing ranks them when
    /// those are over their share), else as rendezvous hashing ranks them.
    fn candidates(&self, function: &str, workers: &[String], concurrent: u32) -> Vec<String> {
        // Ranked only when needed: not on the common path.
        let ranked = || placement::slice(function, workers).into_iter().cloned();
        if let Some(assignments) = &self.assignments {
            let mut assigned = assignments.workers_of(function, workers);
            if !assigned.is_empty() {
                if concurrent >= placement::SPILL_CONCURRENCY
                    && self.outstanding.over_share(&assigned, workers)
                {
                    // Busy, on a worker over its share: onto the
                    // rendezvous workers too.
                    let more: Vec<String> = ranked().filter(|w| !assigned.contains(w)).collect();
                    assigned.extend(more);
                }
                return assigned;
            }
        }
        ranked().collect()
    }

    /// Checks deployments and runs WebSocket upgrades on `local`.
    pub fn with_local(mut self, local: Arc<dyn Invoker>) -> Self {
        self.local = Some(local);
        self
    }

    /// Resolves once `worker` is no longer among the members alive (never,
    /// without members).
    async fn until_gone(&self, worker: &str) {
        let Some(members) = &self.members else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(members::HEARTBEAT / 2).await;
            if !members.is_alive(worker) {
                return;
            }
        }
    }

    /// The local runtime that runs `invocation` instead of a worker, if
    /// any: a WebSocket upgrade's connection cannot cross nodes.
    fn runs_here(&self, invocation: &Invocation) -> Option<&Arc<dyn Invoker>> {
        let upgrade = matches!(&invocation.input, isola_core::InvocationInput::Http(request)
            if isola_core::websocket::is_websocket_upgrade(&request.headers));
        self.local.as_ref().filter(|_| upgrade)
    }

    async fn run(&self, invocation: Invocation) -> Outcome {
        let timeout = invocation.function.limits.timeout() + ANSWER_MARGIN;
        let workers = self
            .members
            .as_ref()
            .map(|m| m.workers())
            .unwrap_or_default();
        let (_running, concurrent) = self.concurrency.enter(&invocation.function.name);
        let candidates = self.candidates(&invocation.function.name, &workers, concurrent);
        let placed = self
            .outstanding
            .pick(&candidates.iter().collect::<Vec<_>>());
        let invocation_name = invocation.function.name.clone();
        let retryable = safe_to_repeat(&invocation);
        let deadline = tokio::time::Instant::now() + timeout;
        let (message, tail) = wire::encode_invocation(invocation, MAX_INLINE_BODY, MAX_INLINE_BODY);
        if message.len() + HEADERS_ROOM > self.client.server_info().max_payload {
            return Outcome::failed(too_large());
        }
        let message = bytes::Bytes::from(message);
        // The rest of a long or streamed body: the worker pulls it.
        let mut headers = None;
        let mut offering = None;
        if !tail.is_empty() {
            let Some((offered, task)) = frames::offer(&self.client, tail, deadline).await else {
                return Outcome::failed(FunctionError::new(
                    ErrorCode::Unavailable,
                    "the request body could not be offered to the workers",
                ));
            };
            (headers, offering) = (Some(offered), Some(task));
        }
        let request = || {
            let request = async_nats::Request::new()
                .payload(message.clone())
                .timeout(Some(timeout));
            match &headers {
                Some(headers) => request.headers(headers.clone()),
                None => request,
            }
        };
        let mut sent = match self.ask(placed.as_ref(), request()).await {
            Asked::Answer(sent) => sent,
            // Its worker died under it: a request that is safe to repeat,
            // whole in its message, runs once more on another worker.
            Asked::Lost(lost) if retryable && offering.is_none() => {
                let workers: Vec<String> = workers.into_iter().filter(|w| *w != lost).collect();
                let others = self.candidates(&invocation_name, &workers, concurrent);
                let other = self.outstanding.pick(&others.iter().collect::<Vec<_>>());
                match self.ask(other.as_ref(), request()).await {
                    Asked::Answer(sent) => sent,
                    Asked::Lost(_) => return Outcome::failed(worker_lost()),
                }
            }
            Asked::Lost(_) => return Outcome::failed(worker_lost()),
        };
        let gone =
            |e: &async_nats::RequestError| e.kind() == async_nats::RequestErrorKind::NoResponders;
        let busy = |answer: &async_nats::Message| {
            answer
                .headers
                .as_ref()
                .is_some_and(|h| h.get(BUSY_HEADER).is_some())
        };
        if placed.is_some() && sent.as_ref().is_err_and(gone) {
            // The worker left since its last heartbeat: any other will do.
            sent = self.client.send_request(INVOKE_SUBJECT, request()).await;
        }
        if sent.as_ref().is_ok_and(busy) {
            // Full: another worker may not be.
            sent = self.client.send_request(INVOKE_SUBJECT, request()).await;
        }
        drop(placed);
        // Answered: the worker has read what it wanted of the request body.
        if let Some(offering) = offering {
            offering.abort();
        }
        let answer = match sent {
            Ok(answer) => answer,
            Err(error) => return Outcome::failed(unreachable_worker(&error)),
        };
        match wire::decode_outcome(&answer.payload) {
            Ok((outcome, None)) => outcome,
            Ok((outcome, Some(chunks))) => match frames::offered(answer.headers.as_ref()) {
                Some(subject) => {
                    frames::pull(&self.client, subject, chunks);
                    outcome
                }
                None => Outcome::failed(FunctionError::new(
                    ErrorCode::Internal,
                    "a worker answered with a streamed body but no place to pull it from",
                )),
            },
            Err(error) => Outcome::failed(FunctionError::new(
                ErrorCode::Internal,
                format!("a worker answered with a malformed outcome: {error}"),
            )),
        }
    }
}

/// What asking a worker gave: its answer (or the request's error), or
/// the worker, which stopped before answering.
enum Asked {
    Answer(Result<async_nats::Message, async_nats::RequestError>),
    Lost(String),
}

impl NatsInvoker {
    /// Sends `request` to the worker `placed` on, watching its heartbeats,
    /// or to the queue group without one.
    async fn ask(
        &self,
        placed: Option<&placement::OutstandingGuard>,
        request: async_nats::Request,
    ) -> Asked {
        let Some(placed) = placed else {
            let sent = self.client.send_request(INVOKE_SUBJECT, request).await;
            return Asked::Answer(sent);
        };
        let subject = direct_subject(&placed.worker);
        let asked = self.client.send_request(subject, request);
        // A worker that dies with the invocation answers nothing: its
        // caller learns it when its heartbeats stop, not at the end of the
        // wall-clock limit.
        tokio::select! {
            sent = asked => Asked::Answer(sent),
            () = self.until_gone(&placed.worker) => Asked::Lost(placed.worker.clone()),
        }
    }
}

/// Whether `invocation` may run twice: an HTTP request of a safe method
/// (GET, HEAD, OPTIONS), as HTTP defines them.
fn safe_to_repeat(invocation: &Invocation) -> bool {
    matches!(&invocation.input, isola_core::InvocationInput::Http(request)
        if matches!(request.method.as_str(), "GET" | "HEAD" | "OPTIONS"))
}

fn worker_lost() -> FunctionError {
    FunctionError::new(
        ErrorCode::WorkerLost,
        "the worker running the invocation stopped before answering (it may have partly run); it was not repeated, as its method is not safe to repeat",
    )
}

fn too_large() -> FunctionError {
    FunctionError::new(
        ErrorCode::InvalidInput,
        "the invocation's head is larger than one NATS message",
    )
}

fn unreachable_worker(error: &async_nats::RequestError) -> FunctionError {
    use async_nats::RequestErrorKind;
    let message = match error.kind() {
        RequestErrorKind::NoResponders => "no worker is serving: retry shortly".to_string(),
        RequestErrorKind::TimedOut => "no worker answered in time".to_string(),
        _ => format!("the cluster could not be reached: {error}"),
    };
    FunctionError::new(ErrorCode::Unavailable, message)
}

impl Invoker for NatsInvoker {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        match self.runs_here(&invocation) {
            Some(local) => local.invoke(invocation),
            None => Box::pin(self.run(invocation)),
        }
    }

    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        // Deploys are checked where they are made (workers load on demand).
        match &self.local {
            Some(local) => local.prepare(function),
            None => Box::pin(async { Ok(()) }),
        }
    }

    fn evict(&self, function_id: &str) {
        if let Some(local) = &self.local {
            local.evict(function_id);
        }
    }

    fn stats(&self) -> InvokerStats {
        self.local
            .as_ref()
            .map_or_else(InvokerStats::default, |local| local.stats())
    }

    fn enqueue(
        &self,
        invocation: Invocation,
        version: u32,
    ) -> BoxFuture<'_, Result<(), FunctionError>> {
        Box::pin(async move {
            let results = self.results().await?;
            queued::enqueue(&self.client, results, invocation, version).await
        })
    }

    fn queued(
        &self,
        id: &str,
    ) -> BoxFuture<'_, Result<Option<isola_core::QueuedInvocation>, FunctionError>> {
        let id = id.to_string();
        Box::pin(async move { self.results().await?.get(&id).await })
    }

    fn nodes(&self) -> Vec<isola_core::NodeInfo> {
        let Some(members) = &self.members else {
            return Vec::new();
        };
        let current = self.assignments.as_ref().and_then(|a| a.current());
        members
            .alive()
            .into_iter()
            .map(|node| {
                let slices = current.as_ref().map_or(0, |a| {
                    a.slices.iter().filter(|s| s.contains(&node.id)).count() as u32
                });
                isola_core::NodeInfo {
                    assigner: current.as_ref().is_some_and(|a| a.assigner == node.id),
                    id: node.id,
                    runs_invocations: node.runs_invocations,
                    serves_http: node.serves_http,
                    in_flight: node.in_flight,
                    slices,
                }
            })
            .collect()
    }
}
