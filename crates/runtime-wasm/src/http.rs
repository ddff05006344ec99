//! Serving a request with a `wasi:http/incoming-handler` component: the
//! request goes in as it came (its body streamed as it arrives), and the
//! response the handler sets is answered as soon as it is set, its body
//! streamed while the handler writes it. A JSON invocation arrives as a
//! `POST /` with the JSON as its body. What the component writes to stdout
//! and stderr becomes its logs.
//!
//! The handler runs in one task until it returns and its body is written;
//! the task's time and memory are the invocation's (see `crate::task`).

use crate::command::{new_store, wasi_for};
use crate::component::State;
use crate::engine::WasmEngine;
use crate::meter::Meter;
use crate::task::Reply;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http_body_util::BodyExt;
use isola_core::{
    ErrorCode, FunctionError, FunctionSource, HttpResponse, InvocationInput, InvocationOutput,
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode as HttpErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// Chunks of a response body in flight to the client, at most.
const BODY_CHUNKS: usize = 16;

/// The response head the handler set, or why there is none.
type Head = Result<hyper::Response<HyperOutgoingBody>, HttpErrorCode>;

/// Runs the handler once, in a fresh instance, and answers through `reply`.
pub async fn serve(
    engine: &WasmEngine,
    pre: &ProxyPre<State>,
    function: &FunctionSource,
    input: InvocationInput,
    meter: Arc<Meter>,
    kv: Option<&Arc<dyn isola_kv::KvStore>>,
    reply: &Reply,
) {
    let (mut wasi, capture) = wasi_for(function, Vec::new(), meter);
    let state = State::new(wasi.build(), function, kv);
    let usage = state.limiter.usage();
    let mut store = new_store(engine, function, state, &capture);
    let request = match to_request(input) {
        Ok(request) => request,
        Err(error) => return reply.send(capture.outcome(Err(error), Vec::new(), &usage)),
    };
    let (head_sender, mut head) = oneshot::channel::<Head>();
    let guest = async {
        let state = store.data_mut();
        let request = state.http().new_incoming_request(Scheme::Http, request)?;
        let out = state.http().new_response_outparam(head_sender)?;
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
            .await
    };
    let mut guest = std::pin::pin!(guest);
    let (arrived, ended) = tokio::select! {
        arrived = &mut head => (arrived.ok(), None),
        ran = &mut guest => (head.try_recv().ok(), Some(ran)),
    };
    let response = match arrived {
        Some(Ok(response)) => response,
        Some(Err(code)) => {
            let error = FunctionError::new(
                ErrorCode::UncaughtException,
                format!("the handler answered with the error {code:?}"),
            );
            return reply.send(capture.outcome(Err(error), capture.output_logs(), &usage));
        }
        None => {
            // No response: the handler failed, or returned without one.
            let ran = match ended {
                Some(ran) => ran,
                None => guest.await,
            };
            let error = match ran {
                Err(error) => capture.failure(&error, function, &usage),
                Ok(()) => FunctionError::new(
                    ErrorCode::UncaughtException,
                    "the handler returned without setting a response",
                ),
            };
            return reply.send(capture.outcome(Err(error), capture.output_logs(), &usage));
        }
    };
    let (parts, mut body) = response.into_parts();
    // What the handler writes without waiting goes out with the head, and
    // a body that ends so goes out whole: one write, no relay.
    let mut first = Vec::new();
    let (mut complete, mut failed, mut ended) = (false, None, ended);
    loop {
        let mut progressed = false;
        if ended.is_none() {
            if let Some(ran) = (&mut guest).now_or_never() {
                ended = Some(ran);
                progressed = true;
            }
        }
        while first.len() < INLINE_BODY && !complete && failed.is_none() {
            match body.frame().now_or_never() {
                None => break,
                Some(None) => complete = true,
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        first.extend_from_slice(&data);
                    }
                    progressed = true;
                }
                Some(Some(Err(error))) => failed = Some(body_failed(&error)),
            }
        }
        if complete || failed.is_some() || !progressed || first.len() >= INLINE_BODY {
            break;
        }
    }
    let chunks = (!complete).then(|| mpsc::channel(BODY_CHUNKS));
    let rest = match &chunks {
        Some((sender, _)) => {
            reply.stream_into(sender.clone());
            Some(sender.clone())
        }
        None => None,
    };
    let head = HttpResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: first,
        rest: chunks.map_or_else(Default::default, |(_, receiver)| {
            isola_core::BodyStream::new(receiver)
        }),
        upgrade: Default::default(),
    };
    reply.send(capture.outcome(
        Ok(InvocationOutput::Http(head)),
        capture.output_logs(),
        &usage,
    ));
    if let Some(rest) = &rest {
        match failed {
            Some(message) => {
                let _ = rest.try_send(Err(message));
            }
            // The relay is a task of its own: the handler's writes wait for it.
            None => drop(tokio::spawn(relay(body, rest.clone()))),
        }
    }
    let ran = match ended {
        Some(ran) => ran,
        None => guest.await,
    };
    if let (Err(error), Some(rest)) = (ran, rest) {
        let error = capture.failure(&error, function, &usage);
        let _ = rest.send(Err(error.message)).await;
    }
}

/// How long the relay waits for a client to take a chunk.
const RELAY_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Most of a response body sent with its head (the rest is streamed).
const INLINE_BODY: usize = 64 << 10;

fn body_failed(error: &impl std::fmt::Display) -> String {
    format!("the response body failed: {error}")
}

/// Relays a response body to the client, chunk by chunk, until it ends,
/// fails, or the client goes.
async fn relay(mut body: HyperOutgoingBody, chunks: mpsc::Sender<isola_core::BodyChunk>) {
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Ok(data.to_vec()),
                // Trailers are not passed on.
                Err(_) => continue,
            },
            Err(error) => Err(body_failed(&error)),
        };
        let failed = chunk.is_err();
        // A client that reads nothing for this long is given up on.
        let sent = tokio::time::timeout(RELAY_IDLE, chunks.send(chunk)).await;
        if !matches!(sent, Ok(Ok(()))) || failed {
            return;
        }
    }
}

/// The request the handler gets for an invocation.
fn to_request(input: InvocationInput) -> Result<hyper::Request<RequestBody>, FunctionError> {
    let invalid = |e: http::Error| {
        FunctionError::new(
            ErrorCode::InvalidInput,
            format!("the request is invalid: {e}"),
        )
    };
    match input {
        InvocationInput::Json(payload) => {
            let body = serde_json::to_vec(&payload).unwrap_or_default();
            hyper::Request::builder()
                .method("POST")
                .uri("http://localhost/")
                .header("content-type", "application/json")
                .body(request_body(body, None))
                .map_err(invalid)
        }
        InvocationInput::Http(request) => {
            let mut builder = hyper::Request::builder()
                .method(request.method.as_str())
                .uri(request.url.as_str());
            for (name, value) in &request.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let rest = request.rest.take();
            builder
                .body(request_body(request.body, rest))
                .map_err(invalid)
        }
    }
}

/// A request body as the handler reads it.
type RequestBody = http_body_util::StreamBody<
    futures::stream::BoxStream<'static, Result<http_body::Frame<Bytes>, wasmtime_wasi_http::Error>>,
>;

/// `first`, then what arrives on `rest`.
fn request_body(
    first: Vec<u8>,
    rest: Option<mpsc::Receiver<isola_core::BodyChunk>>,
) -> RequestBody {
    let first = (!first.is_empty()).then(|| Ok(Bytes::from(first)));
    let rest = futures::stream::unfold(rest, |rest| async move {
        let mut receiver = rest?;
        let chunk = receiver.recv().await?;
        Some((chunk.map(Bytes::from), Some(receiver)))
    });
    let frames = futures::stream::iter(first)
        .chain(rest)
        .map(|chunk| {
            chunk
                .map(http_body::Frame::data)
                .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e)))
        })
        .boxed();
    http_body_util::StreamBody::new(frames)
}
