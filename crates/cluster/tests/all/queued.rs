//! Queued invocations on a real JetStream: each id says where it stands
//! and, once it ran, its result; one whose worker dies under it at every
//! delivery is set aside as a dead letter instead of running again.

use crate::nats::NatsServer;
use crate::transport::{hello, http_get, Known};
use isola_cluster::{serve_queued_with, Deployments, NatsInvoker};
use isola_core::{
    BoxFuture, ErrorCode, FunctionError, FunctionSource, Invocation, Invoker, Outcome,
    QueuedInvocation, QueuedState,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A runtime whose runs never end: its worker is killed under them.
struct Hanging(Arc<AtomicU32>);

impl Invoker for Hanging {
    fn invoke(&self, _: Invocation) -> BoxFuture<'_, Outcome> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::pending())
    }

    fn prepare(&self, _: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        Box::pin(async { Ok(()) })
    }

    fn evict(&self, _: &str) {}
}

const ACK_WAIT: Duration = Duration::from_secs(1);

/// A worker taking queued invocations, run by `runtime`, until aborted.
async fn worker(
    server: &NatsServer,
    runtime: Arc<dyn Invoker>,
    known: &Arc<Known>,
) -> tokio::task::JoinHandle<()> {
    let client = server.client().await;
    let deployments: Arc<dyn Deployments> = known.clone();
    tokio::spawn(async move {
        let serving = serve_queued_with(
            client,
            (runtime, deployments),
            std::future::pending(),
            ACK_WAIT,
        );
        serving.await.unwrap();
    })
}

async fn until(what: &str, mut done: impl FnMut() -> BoxFuture<'static, bool>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn state_of(gateway: &NatsInvoker, id: &str) -> Option<QueuedInvocation> {
    gateway.queued(id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_invocations_say_where_they_stand_and_a_poison_one_is_set_aside() {
    let server = NatsServer::with_jetstream().await;
    let function = hello("queued");
    let known = Arc::new(Known(
        [(function.id.clone(), function.clone())]
            .into_iter()
            .collect(),
    ));
    let gateway = Arc::new(NatsInvoker::new(server.client().await));
    let queue = |id: &str| {
        let mut invocation = http_get(&function, Vec::new());
        invocation.id = id.into();
        let gateway = gateway.clone();
        async move { gateway.enqueue(invocation, 1).await.unwrap() }
    };

    // Known as soon as it is accepted; its result once it ran.
    queue("inv_ok").await;
    let queued = state_of(&gateway, "inv_ok").await.unwrap();
    assert_eq!((queued.state, queued.deliveries), (QueuedState::Queued, 0));
    let wasm: Arc<dyn Invoker> = Arc::new(isola_runtime_wasm::WasmRuntime::new().unwrap());
    let running = worker(&server, wasm.clone(), &known).await;
    let watched = gateway.clone();
    until("the queued invocation did not run", move || {
        let gateway = watched.clone();
        Box::pin(
            async move { state_of(&gateway, "inv_ok").await.unwrap().state == QueuedState::Ok },
        )
    })
    .await;
    let done = state_of(&gateway, "inv_ok").await.unwrap();
    assert_eq!(done.output, Some(serde_json::json!({ "status": 200 })));
    assert_eq!((done.deliveries, done.function.as_str()), (1, "hello"));
    running.abort();

    // Its worker dies under it at each of its 5 runs: the 6th delivery
    // sets it aside without running it.
    queue("inv_poison").await;
    let runs = Arc::new(AtomicU32::new(0));
    for run in 1..=5 {
        let dying = worker(&server, Arc::new(Hanging(runs.clone())), &known).await;
        let seen = runs.clone();
        until("the poison invocation was not delivered again", move || {
            let n = seen.load(Ordering::SeqCst);
            Box::pin(async move { n >= run })
        })
        .await;
        dying.abort();
    }
    let running = worker(&server, wasm, &known).await;
    let watched = gateway.clone();
    until("the poison invocation was not set aside", move || {
        let gateway = watched.clone();
        Box::pin(async move {
            state_of(&gateway, "inv_poison").await.unwrap().state == QueuedState::Dead
        })
    })
    .await;
    let dead = state_of(&gateway, "inv_poison").await.unwrap();
    assert_eq!(dead.deliveries, 6);
    assert_eq!(dead.error.unwrap().code, ErrorCode::WorkerLost);
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    let js = async_nats::jetstream::new(server.client().await);
    let letters = js
        .get_stream("ISOLA_ASYNC_DEAD")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(letters.state.messages, 1);
    let queue = js
        .get_stream("ISOLA_ASYNC")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(queue.state.messages, 0);
    running.abort();

    // Ids it never gave are unknown, whatever they hold.
    assert_eq!(state_of(&gateway, "inv_never").await, None);
    assert_eq!(state_of(&gateway, "a.>").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_function_cannot_fill_the_queue_for_the_others() {
    let server = NatsServer::with_jetstream().await;
    // The queue as an operator tuned it: 3 per function (10,000 by default).
    let js = async_nats::jetstream::new(server.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ISOLA_ASYNC".into(),
        subjects: vec!["isola.async.*".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        max_messages_per_subject: 3,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let gateway = NatsInvoker::new(server.client().await);
    let hello = hello("queued");
    let mut other = (*hello).clone();
    other.name = "other".into();
    let other = Arc::new(other);
    let queue = |function: &Arc<FunctionSource>, id: &str| {
        let mut invocation = http_get(function, Vec::new());
        invocation.id = id.into();
        gateway.enqueue(invocation, 1)
    };
    for n in 0..3 {
        queue(&hello, &format!("inv_h{n}")).await.unwrap();
    }
    let refused = queue(&hello, "inv_h3").await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(refused.message.contains("queued already"), "{refused:?}");
    assert_eq!(state_of(&gateway, "inv_h3").await, None);
    assert!(state_of(&gateway, "inv_h2").await.is_some());
    // Another function still queues.
    queue(&other, "inv_o0").await.unwrap();
}
