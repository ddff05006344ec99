//! `/v1/functions/{name}/invoke` and the invocation records.

use super::{read_body, run};
use crate::respond::{self, Audience};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use isola_core::InvocationInput;
use isola_store::InvocationRecord;
use serde::Deserialize;

/// Query of the invoke route.
#[derive(Debug, Deserialize)]
pub struct InvokeQuery {
    /// Queue the invocation and answer 202 at once (in a cluster).
    #[serde(default, rename = "async")]
    queued: bool,
}

/// Runs the function with a JSON payload (an empty body is `null`). A JSON
/// handler's result is the response body; a Workers-style handler's
/// response is passed through. Metadata comes in `x-isola-*` headers.
/// With `?async=true` the invocation is queued (durably, in a cluster) and
/// answered 202 with its id; its record comes when it has run.
pub async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, state.config.max_request_bytes).await?;
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the payload is not valid JSON: {e}")))?
    };
    if query.queued {
        let id = super::enqueue(&state, &name, InvocationInput::Json(payload)).await?;
        let body = axum::Json(serde_json::json!({ "id": id }));
        return Ok((StatusCode::ACCEPTED, body).into_response());
    }
    let (id, outcome) = run(&state, &name, InvocationInput::Json(payload)).await?;
    Ok(respond::invocation(
        Audience::Owner,
        state.config.max_response_bytes,
        &id,
        outcome,
    ))
}

/// Query of the records endpoint.
#[derive(Debug, Deserialize)]
pub struct RecordsQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    50
}

pub async fn records(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RecordsQuery>,
) -> Result<Json<Vec<InvocationRecord>>, ApiError> {
    if query.limit == 0 || query.limit > 1000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit must be between 1 and 1000",
        ));
    }
    Ok(Json(state.registry.invocations(&name, query.limit).await?))
}

/// Where a queued invocation stands, and its result once it ran (the id
/// `?async=true` answered with). Kept a day; only a cluster queues.
pub async fn queued(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<isola_core::QueuedInvocation>, ApiError> {
    match state.invoker.queued(&id).await? {
        Some(queued) if queued.function == name => Ok(Json(queued)),
        _ => Err(ApiError::not_found(format!(
            "queued invocation {id:?} of function {name:?}"
        ))),
    }
}
