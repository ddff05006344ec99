//! `/v1/functions/{name}/invoke` and the invocation records.

use super::{read_body, run};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use isola_core::{InvocationInput, InvocationMetrics, InvocationOutput};
use isola_store::InvocationRecord;
use serde::Deserialize;

/// Runs the function with a JSON payload (an empty body is `null`). A JSON
/// handler's result is the response body; a Workers-style handler's
/// response is passed through. Metadata comes in `x-isola-*` headers.
pub async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, state.config.max_request_bytes).await?;
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the payload is not valid JSON: {e}")))?
    };
    let (id, outcome) = run(&state, &name, InvocationInput::Json(payload)).await?;
    let mut response = match outcome.result {
        Ok(InvocationOutput::Json(value)) => Json(value).into_response(),
        Ok(InvocationOutput::Http(http)) => {
            super::traffic::into_response(state.config.max_response_bytes, http)?
        }
        Err(error) => ApiError::from(error).into_response(),
    };
    add_metadata(&mut response, &id, &outcome.metrics);
    Ok(response)
}

/// Adds the `x-isola-*` headers describing an invocation.
pub fn add_metadata(response: &mut Response, id: &str, metrics: &InvocationMetrics) {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-isola-invocation-id", id.to_string());
    set("x-isola-duration-us", metrics.duration_us.to_string());
    set("x-isola-cpu-us", metrics.cpu_us.to_string());
    set("x-isola-cold-start", metrics.cold_start.to_string());
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
