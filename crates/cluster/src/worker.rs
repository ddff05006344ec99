//! A worker's side: invocations taken from the workers' queue group, run on
//! the worker's own runtimes, answered with their outcome.
//!
//! What a worker holds is bounded: at most [`MAX_IN_FLIGHT`] invocations
//! run at once (past that, an invocation is answered at once that the
//! worker is busy, rather than queued in memory), a message's bytes are
//! let go once decoded, and the client buffers at most
//! [`crate::SUBSCRIPTION_CAPACITY`] messages. Every invocation taken is
//! answered: an outcome too large for one message becomes an error that
//! keeps its metrics, and on shutdown the worker leaves the queue group
//! (`drain`: what the server sent already still arrives and runs), lets
//! what is under way finish, and answers what is still running when its
//! grace ends.

use crate::{Deployments, INVOKE_SUBJECT, MAX_INLINE_BODY, WORKERS};
use async_nats::Subject;
use futures::StreamExt;
use isola_core::wire;
use isola_core::{ErrorCode, FunctionError, Invoker, LogEntry, LogLevel, Outcome};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most invocations one worker runs at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How long a stopping worker waits for the invocations under way.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A worker's places: the queue group, and the subject of the
/// invocations placed on it by id (`crate::direct_subject`). Taken before
/// it says it is ready, so that invocations sent from then on reach it.
pub struct WorkerQueue {
    client: async_nats::Client,
    requests: async_nats::Subscriber,
    placed: async_nats::Subscriber,
    in_flight: Arc<AtomicU32>,
    load: Arc<crate::assigner::SliceLoad>,
}

impl WorkerQueue {
    /// Joins the workers' queue group as worker `id`.
    pub async fn join(
        client: async_nats::Client,
        id: &str,
    ) -> Result<Self, async_nats::SubscribeError> {
        let requests = client
            .queue_subscribe(INVOKE_SUBJECT, WORKERS.to_string())
            .await?;
        let placed = client.subscribe(crate::direct_subject(id)).await?;
        // The server has the subscriptions once it answered the flush.
        let _ = client.flush().await;
        Ok(Self {
            client,
            requests,
            placed,
            in_flight: Arc::default(),
            load: Arc::default(),
        })
    }

    /// What it ran per slice (for its heartbeat, and the assigner).
    pub fn load(&self) -> Arc<crate::assigner::SliceLoad> {
        self.load.clone()
    }

    /// How many invocations the worker runs now (for its heartbeat).
    pub fn in_flight(&self) -> Arc<AtomicU32> {
        self.in_flight.clone()
    }
}

/// Reply subjects of the invocations under way, to answer should they be
/// abandoned.
type Pending = Arc<Mutex<HashSet<String>>>;

/// Serves invocations sent to the workers' queue group with `invoker`,
/// loading deployments from `deployments`, until `shutdown` resolves (or
/// the connection ends); then leaves the group and finishes what it took
/// (for at most 30 s).
pub async fn serve_worker(
    queue: WorkerQueue,
    invoker: Arc<dyn Invoker>,
    deployments: Arc<dyn Deployments>,
    shutdown: impl Future<Output = ()>,
) {
    let WorkerQueue {
        client,
        mut requests,
        mut placed,
        in_flight,
        load,
    } = queue;
    let mut open = [true, true];
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let pending: Pending = Arc::default();
    let mut running = tokio::task::JoinSet::new();
    let mut draining = false;
    tokio::pin!(shutdown);
    // Until both subscriptions end (drained, or the connection closed).
    while open[0] || open[1] {
        let request = tokio::select! {
            request = requests.next(), if open[0] => match request {
                Some(request) => request,
                None => { open[0] = false; continue }
            },
            request = placed.next(), if open[1] => match request {
                Some(request) => request,
                None => { open[1] = false; continue }
            },
            Some(_) = running.join_next(), if !running.is_empty() => continue,
            () = &mut shutdown, if !draining => {
                draining = true;
                // New invocations go to the other workers from here on;
                // those the server sent already still arrive.
                let left = (requests.drain().await, placed.drain().await);
                if let (Err(error), _) | (_, Err(error)) = left {
                    tracing::warn!(%error, "could not leave the workers' queue group");
                    break;
                }
                continue;
            }
        };
        let async_nats::Message {
            payload,
            reply,
            headers,
            ..
        } = request;
        let Some(reply) = reply else {
            continue;
        };
        let client = client.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Said in a header too: the gateway tries another worker.
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(crate::BUSY_HEADER, "1");
            let (message, _) = wire::encode_outcome(Outcome::failed(busy()), 0, 0);
            let _ = client
                .publish_with_headers(reply, headers, message.into())
                .await;
            continue;
        };
        let (invoker, deployments, pending) =
            (invoker.clone(), deployments.clone(), pending.clone());
        pending.lock().unwrap().insert(reply.to_string());
        let (in_flight, load) = (in_flight.clone(), load.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        running.spawn(async move {
            let body = crate::frames::offered(headers.as_ref());
            let mut deadline = tokio::time::Instant::now();
            let runtimes = (invoker, deployments);
            let outcome = run_received(
                &client,
                (payload, body),
                runtimes,
                &mut deadline,
                Some(&load),
            )
            .await;
            if pending.lock().unwrap().remove(reply.as_str()) {
                // The response's body, if it streams, is offered on its own
                // (until the invocation's deadline and 30 s past it at most).
                answer(&client, reply, outcome, deadline + crate::frames::BODY_IDLE).await;
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    let finished = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, finished).await.is_err() {
        tracing::warn!("invocations still running {STOP_GRACE:?} after the worker stopped");
    }
    running.abort_all();
    let abandoned: Vec<String> = pending.lock().unwrap().drain().collect();
    for reply in abandoned {
        let stopped = FunctionError::new(
            ErrorCode::Unavailable,
            "the worker stopped before the invocation ended (it may have partly run)",
        );
        let now = tokio::time::Instant::now();
        answer(&client, Subject::from(reply), Outcome::failed(stopped), now).await;
    }
    let _ = client.flush().await;
}

fn busy() -> FunctionError {
    FunctionError::new(
        ErrorCode::Unavailable,
        format!("the worker is running {MAX_IN_FLIGHT} invocations already: retry shortly"),
    )
}

/// Sends `outcome` to `reply`, offering the rest of its body for the
/// gateway to pull (the task offering it is given back). An outcome too
/// large for a message (a long head: many log lines) goes as an error with
/// its metrics and no lines.
async fn answer(
    client: &async_nats::Client,
    reply: Subject,
    outcome: Outcome,
    deadline: tokio::time::Instant,
) {
    let most = client
        .server_info()
        .max_payload
        .max(1 << 16)
        .saturating_sub(crate::HEADERS_ROOM);
    let metrics = outcome.metrics;
    // Long lines leave less room for the body in the message; the rest of
    // the body follows in frames.
    let lines: usize = outcome.logs.iter().map(|l| l.message.len() * 6 + 64).sum();
    let inline = MAX_INLINE_BODY.min(most.saturating_sub(lines + (16 << 10)));
    let (mut message, mut tail) = wire::encode_outcome(outcome, inline, MAX_INLINE_BODY);
    if message.len() > most {
        let size = message.len();
        let mut cut = Outcome::failed(FunctionError::new(
            ErrorCode::InvalidOutput,
            format!("the outcome with its logs ({size} bytes) is larger than what crosses between nodes ({most} bytes)"),
        ));
        cut.metrics = metrics;
        cut.logs = vec![LogEntry {
            level: LogLevel::Warn,
            message: "console lines dropped: the outcome was too large to cross between nodes"
                .into(),
        }];
        (message, tail) = wire::encode_outcome(cut, 0, 0);
    }
    let offered = match tail.is_empty() {
        true => None,
        false => crate::frames::offer(client, tail, deadline).await,
    };
    let headers = offered.map(|(headers, _offering)| headers);
    let sent = match headers {
        Some(headers) => {
            client
                .publish_with_headers(reply, headers, message.into())
                .await
        }
        None => client.publish(reply, message.into()).await,
    };
    if let Err(error) = sent {
        tracing::warn!(%error, "could not answer an invocation");
    }
}

/// Runs an invocation message, the rest of its body pulled from the
/// subject `body` names; what went wrong is the outcome. Moves `deadline`
/// to the invocation's wall-clock deadline once it runs.
pub(crate) async fn run_received(
    client: &async_nats::Client,
    (payload, body): (bytes::Bytes, Option<String>),
    (invoker, deployments): (Arc<dyn Invoker>, Arc<dyn Deployments>),
    deadline: &mut tokio::time::Instant,
    load: Option<&crate::assigner::SliceLoad>,
) -> Outcome {
    let received = wire::decode_invocation(&payload);
    // The message's bytes are not kept while the invocation runs.
    drop(payload);
    let received = match received {
        Ok(received) => received,
        Err(error) => {
            return Outcome::failed(FunctionError::new(
                ErrorCode::Internal,
                format!("a gateway sent a malformed invocation: {error}"),
            ))
        }
    };
    let rest = match (received.streamed, body) {
        (false, _) => None,
        (true, Some(subject)) => {
            // Two frames ahead at most: a function that does not read its
            // body holds little of it.
            let (chunks, rest) = tokio::sync::mpsc::channel(2);
            crate::frames::pull(client, subject, chunks);
            Some(rest)
        }
        (true, None) => {
            return Outcome::failed(FunctionError::new(
                ErrorCode::Internal,
                "a gateway sent a streamed body but no place to pull it from",
            ))
        }
    };
    if let Some(load) = load {
        load.count(&received.function);
    }
    let Some(function) = deployments
        .find(&received.function, &received.deployment)
        .await
    else {
        return Outcome::failed(FunctionError::new(
            ErrorCode::Unavailable,
            format!(
                "this worker cannot load deployment {} of {:?} (deployed a moment ago?): retry shortly",
                received.deployment, received.function
            ),
        ));
    };
    *deadline += function.limits.timeout();
    match received.into_invocation(function, rest) {
        Ok(invocation) => invoker.invoke(invocation).await,
        Err(error) => Outcome::failed(FunctionError::new(
            ErrorCode::Unavailable,
            error.to_string(),
        )),
    }
}
