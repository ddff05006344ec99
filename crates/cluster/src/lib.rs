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
//! Not yet: bodies larger than one message (they are refused with a clear
//! error), placement (every worker takes any function), heartbeats, and
//! the JetStream registry, KV and async invocations.

use async_trait::async_trait;
use futures::StreamExt;
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

/// Most body bytes an invocation or outcome carries in its one message:
/// NATS refuses messages past its `max_payload` (1 MiB by default).
pub const MAX_INLINE_BODY: usize = 768 << 10;

/// How long past its wall-clock limit a gateway waits for a worker's
/// answer (queueing, the trip, the outcome's way back).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Where a worker finds the deployment an invocation names.
#[async_trait]
pub trait Deployments: Send + Sync + 'static {
    /// The deployment `deployment` (a `FunctionSource::id`) of `function`,
    /// if this node can load it.
    async fn find(&self, function: &str, deployment: &str) -> Option<Arc<FunctionSource>>;
}

/// Runs invocations on the workers of a cluster.
pub struct NatsInvoker {
    client: async_nats::Client,
}

impl NatsInvoker {
    /// Sends invocations through `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }

    async fn run(&self, invocation: Invocation) -> Outcome {
        let timeout = invocation.function.limits.timeout() + ANSWER_MARGIN;
        let (message, tail) = wire::encode_invocation(invocation, MAX_INLINE_BODY, MAX_INLINE_BODY);
        if !tail.is_empty() {
            return Outcome::failed(too_large());
        }
        let request = async_nats::Request::new()
            .payload(message.into())
            .timeout(Some(timeout));
        let answer = match self.client.send_request(INVOKE_SUBJECT, request).await {
            Ok(answer) => answer,
            Err(error) => return Outcome::failed(unreachable_worker(&error)),
        };
        match wire::decode_outcome(&answer.payload) {
            Ok((outcome, None)) => outcome,
            Ok((_, Some(_))) => Outcome::failed(too_large()),
            Err(error) => Outcome::failed(FunctionError::new(
                ErrorCode::Internal,
                format!("a worker answered with a malformed outcome: {error}"),
            )),
        }
    }
}

fn too_large() -> FunctionError {
    FunctionError::new(
        ErrorCode::InvalidInput,
        format!(
            "bodies of more than {} KiB do not cross between nodes yet",
            MAX_INLINE_BODY >> 10
        ),
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
        Box::pin(self.run(invocation))
    }

    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        // Deploys are checked where they are made; workers load on demand.
        let _ = function;
        Box::pin(async { Ok(()) })
    }

    fn evict(&self, _function_id: &str) {}

    fn stats(&self) -> InvokerStats {
        InvokerStats::default()
    }
}

/// Serves invocations sent to the workers' queue group with `invoker`,
/// loading deployments from `deployments`, until the subscription ends.
/// Each invocation runs as a task of its own.
pub async fn serve_worker(
    client: async_nats::Client,
    invoker: Arc<dyn Invoker>,
    deployments: Arc<dyn Deployments>,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client
        .queue_subscribe(INVOKE_SUBJECT, WORKERS.to_string())
        .await?;
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let (client, invoker, deployments) = (client.clone(), invoker.clone(), deployments.clone());
        tokio::spawn(async move {
            let outcome = run_received(&request.payload, invoker, deployments).await;
            let (message, _) = wire::encode_outcome(outcome, MAX_INLINE_BODY, MAX_INLINE_BODY);
            if let Err(error) = client.publish(reply, message.into()).await {
                tracing::warn!(%error, "could not answer an invocation");
            }
        });
    }
    Ok(())
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
