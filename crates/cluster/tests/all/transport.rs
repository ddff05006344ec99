//! Invocations between a gateway and workers through a real nats-server,
//! run by the Wasm runtime.

use crate::nats::NatsServer;
use async_trait::async_trait;
use isola_cluster::{serve_worker, Deployments, NatsInvoker, WorkerQueue};
use isola_core::{
    ErrorCode, FunctionSource, HttpRequest, Invocation, InvocationInput, InvocationOutput, Invoker,
    Outcome, RuntimeKind,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Deployments a worker can load, by id.
#[derive(Default)]
pub struct Known(pub HashMap<String, Arc<FunctionSource>>);

#[async_trait]
impl Deployments for Known {
    async fn find(&self, _function: &str, deployment: &str) -> Option<Arc<FunctionSource>> {
        self.0.get(deployment).cloned()
    }
}

/// A `wasi:http` component answering `text`.
pub fn hello(text: &str) -> Arc<FunctionSource> {
    let bytes = isola_runtime_wasm::fixtures::hello(text);
    let mut source = FunctionSource::single_module("hello:v1", "hello", "");
    source.runtime = RuntimeKind::detect(&bytes);
    source.entry = "main.wasm".into();
    source.files[0].path = "main.wasm".into();
    source.files[0].code = bytes;
    Arc::new(source)
}

/// Starts a worker that knows `functions`.
async fn worker(server: &NatsServer, functions: &[Arc<FunctionSource>]) {
    let known = Known(
        functions
            .iter()
            .map(|f| (f.id.clone(), f.clone()))
            .collect(),
    );
    let client = server.client().await;
    let runtime: Arc<dyn Invoker> = Arc::new(isola_runtime_wasm::WasmRuntime::new().unwrap());
    // Joined (and the server told) before this returns.
    let queue = WorkerQueue::join(client, "w").await.unwrap();
    tokio::spawn(serve_worker(
        queue,
        runtime,
        Arc::new(known),
        std::future::pending(),
    ));
}

pub fn http_get(function: &Arc<FunctionSource>, body: Vec<u8>) -> Invocation {
    Invocation {
        id: "inv_1".into(),
        function: function.clone(),
        input: InvocationInput::Http(HttpRequest {
            method: "GET".into(),
            url: "http://hello.example/".into(),
            headers: vec![("host".into(), "hello.example".into())],
            body,
            rest: Default::default(),
        }),
    }
}

async fn text_of(outcome: Outcome) -> (u16, String) {
    match outcome.result {
        Ok(InvocationOutput::Http(response)) => {
            let body = response.read_body(1 << 20).await.unwrap();
            (response.status, String::from_utf8(body).unwrap())
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_runs_on_a_worker_and_its_outcome_comes_back() {
    let server = NatsServer::start().await;
    let function = hello("hello from a worker");
    worker(&server, std::slice::from_ref(&function)).await;
    let gateway = NatsInvoker::new(server.client().await);
    for _ in 0..3 {
        let outcome = gateway.invoke(http_get(&function, Vec::new())).await;
        assert_eq!(text_of(outcome).await, (200, "hello from a worker".into()));
    }
    // A JSON invocation too (a POST to the component).
    let outcome = gateway
        .invoke(Invocation {
            id: "inv_2".into(),
            function: function.clone(),
            input: InvocationInput::Json(serde_json::json!({ "n": 1 })),
        })
        .await;
    assert_eq!(text_of(outcome).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_run_elsewhere_is_refused_with_why() {
    let server = NatsServer::start().await;
    let function = hello("hello");
    let gateway = NatsInvoker::new(server.client().await);
    // No worker yet.
    let outcome = gateway.invoke(http_get(&function, Vec::new())).await;
    let error = outcome.result.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.message.contains("no worker"), "{error:?}");
    // A worker that cannot load the deployment.
    worker(&server, &[]).await;
    let error = gateway
        .invoke(http_get(&function, Vec::new()))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        error.message.contains("cannot load deployment"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_a_message_crosses_in_frames() {
    let server = NatsServer::start().await;
    let function = hello("hello");
    worker(&server, std::slice::from_ref(&function)).await;
    let gateway = NatsInvoker::new(server.client().await);
    let outcome = gateway
        .invoke(http_get(&function, vec![b'x'; 3 << 20]))
        .await;
    assert_eq!(text_of(outcome).await, (200, "hello".into()));
}
