//! A worker's side: invocations taken from the workers' queue group, run on
//! the worker's own runtimes, answered with their outcome.
//!
//! What a worker holds is bounded: at most [`MAX_IN_FLIGHT`] invocations
//! run at once (past that, an invocation is answered at once that the
//! worker is busy, rather than queued in memory), and each message is at
//! most what NATS carries in one. On shutdown the worker stops taking
//! invocations first, then lets those under way finish.

use crate::{too_large, Deployments, INVOKE_SUBJECT, MAX_INLINE_BODY, WORKERS};
use futures::StreamExt;
use isola_core::wire;
use isola_core::{ErrorCode, FunctionError, Invoker, Outcome};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Most invocations one worker runs at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How long a stopping worker waits for the invocations under way.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Serves invocations sent to the workers' queue group with `invoker`,
/// loading deployments from `deployments`, until `shutdown` resolves (or
/// the connection ends); then unsubscribes, so that new invocations go to
/// other workers, and waits for those under way (for at most 30 s).
pub async fn serve_worker(
    client: async_nats::Client,
    invoker: Arc<dyn Invoker>,
    deployments: Arc<dyn Deployments>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client
        .queue_subscribe(INVOKE_SUBJECT, WORKERS.to_string())
        .await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut running = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let request = tokio::select! {
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
            Some(_) = running.join_next(), if !running.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let client = client.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            answer(&client, reply, Outcome::failed(busy())).await;
            continue;
        };
        let (invoker, deployments) = (invoker.clone(), deployments.clone());
        running.spawn(async move {
            let outcome = run_received(&request.payload, invoker, deployments).await;
            answer(&client, reply, outcome).await;
            drop(slot);
        });
    }
    // New invocations go to the other workers from here on.
    if let Err(error) = requests.unsubscribe().await {
        tracing::warn!(%error, "could not leave the workers' queue group");
    }
    let finished = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, finished).await.is_err() {
        tracing::warn!(
            "invocations still running {STOP_GRACE:?} after the worker stopped: abandoned"
        );
    }
    let _ = client.flush().await;
    Ok(())
}

fn busy() -> FunctionError {
    FunctionError::new(
        ErrorCode::Unavailable,
        format!("the worker is running {MAX_IN_FLIGHT} invocations already: retry shortly"),
    )
}

async fn answer(client: &async_nats::Client, reply: async_nats::Subject, outcome: Outcome) {
    let (message, _) = wire::encode_outcome(outcome, MAX_INLINE_BODY, MAX_INLINE_BODY);
    if let Err(error) = client.publish(reply, message.into()).await {
        tracing::warn!(%error, "could not answer an invocation");
    }
}

/// Runs an invocation message; what went wrong is the outcome.
async fn run_received(
    payload: &[u8],
    invoker: Arc<dyn Invoker>,
    deployments: Arc<dyn Deployments>,
) -> Outcome {
    let received = match wire::decode_invocation(payload) {
        Ok(received) => received,
        Err(error) => {
            return Outcome::failed(FunctionError::new(
                ErrorCode::Internal,
                format!("a gateway sent a malformed invocation: {error}"),
            ))
        }
    };
    if received.streamed {
        return Outcome::failed(too_large());
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
    match received.into_invocation(function, None) {
        Ok(invocation) => {
            let mut outcome = invoker.invoke(invocation).await;
            // A streamed response does not cross yet: collect it, within
            // what one message carries.
            if let Ok(isola_core::InvocationOutput::Http(response)) = &mut outcome.result {
                if response.rest.is_streaming() {
                    match response.read_body(MAX_INLINE_BODY).await {
                        Ok(body) => response.body = body,
                        Err(_) => outcome.result = Err(too_large()),
                    }
                }
            }
            outcome
        }
        Err(error) => Outcome::failed(FunctionError::new(
            ErrorCode::Unavailable,
            error.to_string(),
        )),
    }
}
