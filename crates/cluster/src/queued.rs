//! Asynchronous invocations: queued durably in a JetStream work queue
//! (`ISOLA_ASYNC`), taken by workers one per free slot, acknowledged only
//! once they have run and their record has been published, so an
//! invocation whose worker dies is delivered again (at most
//! [`MAX_DELIVER`] times). A worker says it is still working on one every
//! third of its acknowledgement wait, so a long invocation is not delivered twice. One that
//! could not run (its deployment replaced before it was taken, the worker
//! full) is handed back for another try; at its last delivery it is given
//! up, with an error record saying why. One whose workers stopped under it
//! at every delivery is set aside without running again: it is delivered
//! once more than it may run, and that delivery moves it to the dead
//! letters (`ISOLA_ASYNC_DEAD`, kept a week). Where each stands, and its
//! result, is in `results`.

use crate::results::Results;
use crate::worker::run_received;
use crate::{Deployments, MAX_INLINE_BODY};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::StreamExt;
use isola_core::{wire, ErrorCode, FunctionError, Invocation, Invoker, QueuedInvocation};
use isola_store::InvocationRecord;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The subjects invocations are queued on: `isola.async.<hex of the
/// function's name>`, one per function, so the server bounds each.
const SUBJECTS: &str = "isola.async.*";

/// Invocations of one function the queue holds at most: past it, the
/// server refuses more (`discard_new_per_subject`), and the function's
/// callers are told to come back later; other functions still queue.
pub const MAX_QUEUED_PER_FUNCTION: i64 = 10_000;

fn subject(function: &str) -> String {
    format!("isola.async.{}", crate::kv::hex(function))
}

/// The header carrying the deployment's version (for its record).
const VERSION_HEADER: &str = "Isola-Version";

/// How long a taken invocation may go unacknowledged before it is
/// delivered again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Times one invocation is run at most.
pub const MAX_DELIVER: i64 = 5;

/// The subject of the dead letters.
const DEAD_SUBJECT: &str = "isola.dead.async";

/// Invocations one worker runs from the queue at once.
const SLOTS: usize = 64;

/// The queue's stream, created on first use; one made by an older node
/// gets this one's subjects and per-function bound (the limits an operator
/// may have tuned are kept).
async fn queue(js: &jetstream::Context) -> Result<stream::Stream, FunctionError> {
    let failed =
        |error: String| unavailable(format!("the invocation queue is unavailable: {error}"));
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: "ISOLA_ASYNC".into(),
            subjects: vec![SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: 100_000,
            max_messages_per_subject: MAX_QUEUED_PER_FUNCTION,
            max_bytes: 1 << 30,
            max_message_size: 1 << 20,
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|error| failed(error.to_string()))?;
    let config = stream
        .info()
        .await
        .map_err(|error| failed(error.to_string()))?
        .config
        .clone();
    if config.subjects != [SUBJECTS]
        || !config.discard_new_per_subject
        || config.max_messages_per_subject <= 0
    {
        let mut updated = config;
        updated.subjects = vec![SUBJECTS.into()];
        updated.discard = stream::DiscardPolicy::New;
        updated.discard_new_per_subject = true;
        if updated.max_messages_per_subject <= 0 {
            updated.max_messages_per_subject = MAX_QUEUED_PER_FUNCTION;
        }
        js.update_stream(updated)
            .await
            .map_err(|error| failed(error.to_string()))?;
    }
    Ok(stream)
}

/// The dead letters' stream, created on first use: the last week's, at
/// most 10,000.
async fn dead_letters(js: &jetstream::Context) -> Result<stream::Stream, FunctionError> {
    js.get_or_create_stream(stream::Config {
        name: "ISOLA_ASYNC_DEAD".into(),
        subjects: vec![DEAD_SUBJECT.into()],
        max_messages: 10_000,
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_message_size: 1 << 20,
        discard: stream::DiscardPolicy::Old,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|error| unavailable(format!("the dead letters are unavailable: {error}")))
}

fn unavailable(message: String) -> FunctionError {
    FunctionError::new(ErrorCode::Unavailable, message)
}

/// Queues `invocation`; returns once JetStream has stored it.
pub(crate) async fn enqueue(
    client: &async_nats::Client,
    results: &Results,
    invocation: Invocation,
    version: u32,
) -> Result<(), FunctionError> {
    let js = jetstream::new(client.clone());
    queue(&js).await?;
    let queued = QueuedInvocation::queued(&invocation.id, &invocation.function.name);
    let (message, tail) = wire::encode_invocation(invocation, MAX_INLINE_BODY, MAX_INLINE_BODY);
    if !tail.is_empty() {
        return Err(FunctionError::new(
            ErrorCode::InvalidInput,
            format!(
                "a queued invocation carries at most {} KiB",
                MAX_INLINE_BODY >> 10
            ),
        ));
    }
    // Known before it can run: its id never answers "unknown".
    results.set(&queued).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(VERSION_HEADER, version.to_string().as_str());
    let stored = match js
        .publish_with_headers(subject(&queued.function), headers, message.into())
        .await
    {
        Ok(ack) => ack.await,
        Err(error) => Err(error),
    };
    let Err(error) = stored else {
        return Ok(());
    };
    // Not queued: its id must not say it is.
    results.forget(&queued.id).await;
    if error.to_string().contains("10077") {
        return Err(unavailable(format!(
            "function {:?} has {MAX_QUEUED_PER_FUNCTION} invocations queued already: retry later",
            queued.function
        )));
    }
    Err(unavailable(format!(
        "the queue did not store the invocation: {error}"
    )))
}

/// Runs queued invocations on `invoker` until `shutdown` resolves; those
/// under way finish first.
pub async fn serve_queued(
    client: async_nats::Client,
    invoker: Arc<dyn Invoker>,
    deployments: Arc<dyn Deployments>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FunctionError> {
    serve_queued_with(client, (invoker, deployments), shutdown, ACK_WAIT).await
}

/// [`serve_queued`], with invocations delivered again after `ack_wait`
/// without word from their worker (its progress is said every third of
/// it). The queue's consumer keeps the `ack_wait` it was created with.
pub async fn serve_queued_with(
    client: async_nats::Client,
    (invoker, deployments): (Arc<dyn Invoker>, Arc<dyn Deployments>),
    shutdown: impl Future<Output = ()>,
    ack_wait: Duration,
) -> Result<(), FunctionError> {
    let js = jetstream::new(client.clone());
    let results = Results::open(&js).await?;
    let dead = dead_letters(&js).await?;
    drop(dead);
    let config = consumer::pull::Config {
        durable_name: Some("isola-async".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        // More than it may run: those deliveries set it aside (again, if
        // setting it aside failed).
        max_deliver: MAX_DELIVER + 3,
        max_ack_pending: 1024,
        ..Default::default()
    };
    // Created, or updated to this configuration (an older node's may
    // differ).
    let consumer: consumer::PullConsumer = queue(&js)
        .await?
        .create_consumer(config)
        .await
        .map_err(|error| unavailable(format!("could not follow the invocation queue: {error}")))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(SLOTS));
    let mut running = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        // One message per free slot: nothing waits taken but not running.
        let batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let Some(Ok(message)) = (match batch {
            Ok(mut batch) => batch.next().await,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }) else {
            continue;
        };
        let (client, results) = (client.clone(), results.clone());
        let runtimes = (invoker.clone(), deployments.clone());
        running.spawn(async move {
            let delivered = message.info().map_or(MAX_DELIVER, |info| info.delivered);
            let Some(who) = who(&message) else {
                let _ = message.ack_with(AckKind::Term).await;
                drop(slot);
                return;
            };
            if already_finished(&results, &who.0).await {
                // It ran and its result is kept; only its acknowledgement
                // was lost.
                let _ = message.double_ack().await;
            } else if delivered > MAX_DELIVER {
                dead_letter(&client, &results, message, who, delivered).await;
            } else {
                run_one(&client, &results, message, runtimes, (who, ack_wait / 3)).await;
            }
            drop(slot);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Which invocation a queued message carries: its id, its function, and
/// its deployment's version (`None`: not an invocation).
type Who = (String, String, u32);

fn who(message: &jetstream::Message) -> Option<Who> {
    let received = wire::decode_invocation(&message.payload).ok()?;
    let version = message
        .headers
        .as_ref()
        .and_then(|h| h.get(VERSION_HEADER))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0);
    Some((received.id, received.function, version))
}

/// Whether invocation `id` has a final state kept already (it ran, or was
/// set aside, and only its acknowledgement was lost).
async fn already_finished(results: &Results, id: &str) -> bool {
    matches!(
        results.get(id).await,
        Ok(Some(state)) if state.state != isola_core::QueuedState::Queued
    )
}

/// How long an invocation that could not run waits before its next
/// delivery: 1, 2, 4, 8… seconds after its 1st, 2nd, 3rd, 4th… delivery,
/// at most a minute, so a cluster full for a while does not use up its
/// deliveries at once.
fn backoff(delivered: i64) -> Duration {
    Duration::from_secs(1 << (delivered - 1).clamp(0, 6)).min(Duration::from_secs(60))
}

/// Runs one queued invocation, keeps its result, publishes its record,
/// then acknowledges it.
async fn run_one(
    client: &async_nats::Client,
    results: &Results,
    message: jetstream::Message,
    runtimes: (Arc<dyn Invoker>, Arc<dyn Deployments>),
    ((id, function, version), progress): (Who, Duration),
) {
    let created_at = crate::registry::now_ms();
    let mut deadline = tokio::time::Instant::now();
    let run = run_received(
        client,
        (message.payload.clone(), None),
        runtimes,
        &mut deadline,
        None,
    );
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            () = tokio::time::sleep(progress) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    let delivered = message.info().map_or(MAX_DELIVER, |info| info.delivered);
    let mut outcome = outcome;
    if let Err(error) = &mut outcome.result {
        if error.code == ErrorCode::Unavailable {
            if delivered < MAX_DELIVER {
                // Not run (its deployment replaced meanwhile, the node
                // full): again later, perhaps elsewhere.
                let _ = message
                    .ack_with(AckKind::Nak(Some(backoff(delivered))))
                    .await;
                return;
            }
            // The last delivery: given up, and said so in its record.
            error.message = format!("given up after {delivered} deliveries: {}", error.message);
        }
    }
    let result =
        QueuedInvocation::queued(&id, &function).finished(delivered as u64, &outcome.result);
    let logs = std::mem::take(&mut outcome.logs);
    let who = (id.as_str(), function.as_str(), version);
    let record = InvocationRecord::finished(who, created_at, &outcome, logs);
    finish(client, results, message, result, record).await;
}

/// Keeps `result` and publishes `record`, then acknowledges `message`:
/// if either fails, the message is delivered again.
async fn finish(
    client: &async_nats::Client,
    results: &Results,
    message: jetstream::Message,
    result: QueuedInvocation,
    record: InvocationRecord,
) {
    if let Err(error) = results.set(&result).await {
        tracing::warn!(%error, id = result.id, "could not keep a queued invocation's result");
        return;
    }
    if crate::registry::publish_records(client, "queued", &[record])
        .await
        .is_ok()
    {
        let _ = message.double_ack().await;
    }
}

/// Sets aside an invocation whose workers stopped under it at each of its
/// deliveries: into the dead letters, with a record and its state saying
/// so, without running it again.
async fn dead_letter(
    client: &async_nats::Client,
    results: &Results,
    message: jetstream::Message,
    (id, function, version): Who,
    delivered: i64,
) {
    // Its id names it: set aside again after a failure, it is stored once.
    let js = jetstream::new(client.clone());
    let publish = jetstream::message::PublishMessage::build()
        .payload(message.payload.clone())
        .message_id(format!("{id}.dead"));
    let stored = match js.send_publish(DEAD_SUBJECT, publish).await {
        Ok(ack) => ack.await,
        Err(error) => Err(error),
    };
    if let Err(error) = stored {
        tracing::warn!(%error, "could not set aside a queued invocation: trying again");
        let _ = message
            .ack_with(AckKind::Nak(Some(backoff(delivered))))
            .await;
        return;
    }
    let error = FunctionError::new(
        ErrorCode::WorkerLost,
        format!(
            "set aside as a dead letter: its worker stopped under it each of the {} times it ran",
            delivered - 1
        ),
    );
    let mut result =
        QueuedInvocation::queued(&id, &function).finished(delivered as u64, &Err(error.clone()));
    result.state = isola_core::QueuedState::Dead;
    let outcome = isola_core::Outcome::failed(error);
    let record = InvocationRecord::finished(
        (&id, &function, version),
        crate::registry::now_ms(),
        &outcome,
        Vec::new(),
    );
    finish(client, results, message, result, record).await;
}
