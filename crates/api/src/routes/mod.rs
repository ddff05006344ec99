//! The routes, one module per resource, and what they share.

mod deployments;
mod functions;
mod invoke;
mod kv;
mod logs;
mod openapi;
mod secrets;
pub(crate) mod traffic;

use crate::active::Active;
use crate::auth::{require_metrics_token, require_token};
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post, put};
use axum::Router;
use isola_core::{Invocation, InvocationInput, InvocationOutput, Outcome};
use isola_store::{InvocationRecord, RequestLine};
use rand::RngCore;
use std::sync::Arc;

/// The whole router.
pub fn router(state: AppState) -> Router {
    let management = Router::new()
        .route("/status", get(functions::status))
        .route("/functions", get(functions::list).post(functions::create))
        .route(
            "/functions/{name}",
            get(functions::get).delete(functions::delete),
        )
        .route(
            "/functions/{name}/deployments",
            get(deployments::list).post(deployments::upload),
        )
        .route(
            "/functions/{name}/deployments/{version}/activate",
            post(deployments::activate),
        )
        .route("/functions/{name}/rollback", post(deployments::rollback))
        .route("/functions/{name}/invocations", get(invoke::records))
        .route("/functions/{name}/invocations/{id}", get(invoke::queued))
        .route("/functions/{name}/logs", get(logs::logs))
        .route("/functions/{name}/secrets", get(secrets::list))
        .route(
            "/functions/{name}/secrets/{secret}",
            put(secrets::put).delete(secrets::delete),
        )
        .route("/functions/{name}/kv", get(kv::list))
        .route(
            "/functions/{name}/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route_layer(from_fn_with_state(state.clone(), require_token));
    traffic_routes(&state)
        .nest("/v1", management)
        .route("/v1/openapi.json", get(openapi::document))
        .route(
            "/metrics",
            get(metrics).route_layer(from_fn_with_state(state.clone(), require_metrics_token)),
        )
        .with_state(state)
}

/// The routes answered wherever a request arrives, a worker thread
/// included: function traffic (by path, else by Host), the owner's invoke
/// route and `/healthz`.
pub(crate) fn traffic_routes(state: &AppState) -> Router<AppState> {
    let invoke = Router::new()
        .route("/v1/functions/{name}/invoke", post(invoke::invoke))
        .route_layer(from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/fn/{name}", any(traffic::by_path_root))
        .route("/fn/{name}/", any(traffic::by_path_root))
        .route("/fn/{name}/{*path}", any(traffic::by_path))
        .merge(invoke)
        .fallback(traffic::by_host)
}

async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let text = state.metrics.render(state.invoker.stats());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Reads a request body, refusing it past `limit` bytes with 413.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = bytes::BytesMut::new();
    loop {
        let Ok(next) = tokio::time::timeout(BODY_IDLE, stream.next()).await else {
            return Err(body_stalled());
        };
        let Some(frame) = next else {
            break;
        };
        let frame = frame.map_err(|error| {
            ApiError::bad_request(format!("could not read the request body: {error}"))
        })?;
        if read.len() + frame.len() > limit {
            drain(stream);
            return Err(ApiError::too_large(limit));
        }
        read.extend_from_slice(&frame);
    }
    Ok(read.freeze())
}

/// How long a request body may send nothing before it is given up.
pub(crate) const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The error for a request body that stopped arriving.
pub(crate) fn body_stalled() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body sent nothing for {} s",
            BODY_IDLE.as_secs()
        ),
    )
}

/// Most of a refused body read and thrown away, and for how long.
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards the rest of a refused body (a bounded amount, for a
/// bounded time) while the refusal goes out, so that a client still sending
/// it reads the 413 instead of a broken pipe.
pub(crate) fn drain(mut stream: axum::body::BodyDataStream) {
    use futures::StreamExt;
    tokio::spawn(async move {
        let discard = async {
            let mut discarded = 0;
            while let Some(Ok(frame)) = stream.next().await {
                discarded += frame.len();
                if discarded > DRAIN_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
    });
}

/// A new invocation id: `inv_`, the time in milliseconds (12 hex digits),
/// then 12 random hex digits. Ids made later sort later, so the records'
/// primary key grows at its end instead of at random places.
pub(crate) fn invocation_id() -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(28);
    let millis = now_ms() as u64 & 0xffff_ffff_ffff;
    let random = rand::thread_rng().next_u64() & 0xffff_ffff_ffff;
    let _ = write!(id, "inv_{millis:012x}{random:012x}");
    id
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs an invocation of the function's active deployment, and records it.
pub async fn run(
    state: &AppState,
    name: &str,
    input: InvocationInput,
) -> Result<(String, Outcome), ApiError> {
    let ran = run_unrecorded(state, name, input).await?;
    state.recorder.record(ran.record);
    Ok((ran.id, ran.outcome))
}

/// An invocation that ran, with its record still to be written.
pub struct Ran {
    /// Its id.
    pub id: String,
    /// How it ended (its logs are in the record).
    pub outcome: Outcome,
    /// Its record.
    pub record: InvocationRecord,
    /// The limits it ran under.
    pub limits: isola_core::Limits,
}

/// Runs an invocation of the function's active deployment; the caller
/// writes its record (a WebSocket connection's, when the connection ends).
pub async fn run_unrecorded(
    state: &AppState,
    name: &str,
    input: InvocationInput,
) -> Result<Ran, ApiError> {
    let active = active(state, name).await?;
    let id = invocation_id();
    let created_at = now_ms();
    let asked = match &input {
        InvocationInput::Http(request) => Some(RequestLine {
            method: cut(&request.method, RECORDED_METHOD).to_string(),
            path: path_of(&request.url),
            status: None,
        }),
        InvocationInput::Json(_) => None,
    };
    let mut outcome = state
        .invoker
        .invoke(Invocation {
            id: id.clone(),
            function: active.source.clone(),
            input,
        })
        .await;
    state.metrics.observe(&active.series, name, &outcome);
    // The caller answers from the result and metrics; the logs go to the record.
    let logs = std::mem::take(&mut outcome.logs);
    let who = (id.as_str(), name, active.deployment.version);
    let mut record = InvocationRecord::finished(who, created_at, &outcome, logs);
    record.request = asked.map(|mut line| {
        if let Ok(InvocationOutput::Http(response)) = &outcome.result {
            line.status = Some(response.status);
        }
        line
    });
    Ok(Ran {
        id,
        outcome,
        record,
        limits: active.source.limits,
    })
}

/// Queues an invocation of the function's active deployment; its id.
pub async fn enqueue(
    state: &AppState,
    name: &str,
    input: InvocationInput,
) -> Result<String, ApiError> {
    let active = active(state, name).await?;
    let id = invocation_id();
    let invocation = Invocation {
        id: id.clone(),
        function: active.source.clone(),
        input,
    };
    state
        .invoker
        .enqueue(invocation, active.deployment.version)
        .await
        .map_err(ApiError::from)?;
    Ok(id)
}

/// Most bytes of a request's path and method kept in its record.
const RECORDED_PATH: usize = 256;
const RECORDED_METHOD: usize = 32;

/// The path of an absolute URL (`http://host/a?b` → `/a`), cut to
/// [`RECORDED_PATH`] bytes. The query is left out: it often carries what
/// must not sit in logs for days (codes, tokens).
fn path_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    cut(path, RECORDED_PATH).to_string()
}

/// `text` cut to at most `bytes`, on a character boundary.
fn cut(text: &str, bytes: usize) -> &str {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The function's active deployment: from the cache, or else looked up on
/// the storage runtime (this may be a worker thread, which does no storage
/// work of its own).
async fn active(state: &AppState, name: &str) -> Result<Arc<Active>, ApiError> {
    if let Some(found) = state.active.cached(name)? {
        return Ok(found);
    }
    let (active, name) = (state.active.clone(), name.to_string());
    state
        .storage
        .spawn(async move { active.get(&name).await })
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "looking up the function failed",
            ))
        })
}
