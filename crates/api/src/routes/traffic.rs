//! Function traffic: `/fn/<name>/<path>` and `<name>.<base-domain>` pass
//! the whole request to the function's `fetch` handler and send its
//! response back.

use super::{invoke::add_metadata, read_body, run};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use isola_core::{BodyStream, HttpRequest, HttpResponse, InvocationInput, InvocationOutput};

pub async fn by_path_root(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    forward(state, name, String::new(), request).await
}

pub async fn by_path(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    forward(state, name, path, request).await
}

/// Everything no other route matched: a function by Host header, or 404.
pub async fn by_host(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let name = match (&state.config.base_domain, host) {
        (Some(base), Some(host)) => host.strip_suffix(&format!(".{base}")).map(str::to_string),
        _ => None,
    };
    let Some(name) = name else {
        return Err(ApiError::not_found(format!(
            "no route for {}",
            request.uri().path()
        )));
    };
    let path = request.uri().path().trim_start_matches('/').to_string();
    forward(state, name, path, request).await
}

async fn forward(
    state: AppState,
    name: String,
    path: String,
    request: Request,
) -> Result<Response, ApiError> {
    let input = to_invocation_input(request, &path, state.config.max_request_bytes).await?;
    let (id, outcome) = run(&state, &name, input).await?;
    let mut response = match outcome.result {
        Ok(InvocationOutput::Http(http)) => into_response(state.config.max_response_bytes, http)?,
        Ok(InvocationOutput::Json(value)) => axum::Json(value).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    };
    add_metadata(&mut response, &id, &outcome.metrics);
    Ok(response)
}

/// The invocation input for an HTTP request to a function, with `path`
/// relative to the function's root.
pub async fn to_invocation_input(
    request: Request,
    path: &str,
    limit: usize,
) -> Result<InvocationInput, ApiError> {
    let (parts, body) = request.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("http://{host}/{path}{query}");
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::too_large(limit));
    }
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let (body, rest) = if chunked || declared.is_some_and(|length| length > STREAM_FROM) {
        (Vec::new(), stream_request_body(body, limit))
    } else {
        (
            read_body(body, limit).await?.to_vec(),
            BodyStream::default(),
        )
    };
    Ok(InvocationInput::Http(HttpRequest {
        method: parts.method.as_str().to_string(),
        url,
        headers,
        body,
        rest,
    }))
}

/// Request bodies larger than this (or of unknown length) are streamed to
/// the function as they arrive instead of being read first.
const STREAM_FROM: usize = 64 * 1024;

/// Relays a request body to the function chunk by chunk; past `limit` bytes
/// the function's stream fails with an error.
fn stream_request_body(body: Body, limit: usize) -> BodyStream {
    use futures::StreamExt;
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut frames = body.into_data_stream();
        let mut received = 0usize;
        while let Some(frame) = frames.next().await {
            let chunk = match frame {
                Ok(bytes) => {
                    received += bytes.len();
                    if received > limit {
                        Err(format!(
                            "the request body is larger than the limit of {limit} bytes"
                        ))
                    } else {
                        Ok(bytes.to_vec())
                    }
                }
                Err(error) => Err(format!("reading the request body failed: {error}")),
            };
            let failed = chunk.is_err();
            if sender.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    BodyStream::new(receiver)
}

/// Turns a function's response into an HTTP response, enforcing the
/// response size limit.
pub fn into_response(limit: usize, http: HttpResponse) -> Result<Response, ApiError> {
    if http.body.len() > limit {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "response_too_large",
            format!(
                "the function's response body ({} bytes) is larger than the limit of {limit} bytes",
                http.body.len()
            ),
        ));
    }
    let status = StatusCode::from_u16(http.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder().status(status);
    for (name, value) in &http.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        response = response.header(name, value);
    }
    let body = match http.rest.take() {
        Some(rest) => Body::from_stream(streamed_body(http.body, rest, limit)),
        None => Body::from(http.body),
    };
    response
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "invalid_response", e.to_string()))
}

/// A streamed body as the function produces it, cut off (the connection
/// aborted) past `limit` bytes or when the function's stream fails.
fn streamed_body(
    first: Vec<u8>,
    rest: tokio::sync::mpsc::Receiver<isola_core::BodyChunk>,
    limit: usize,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let first = (!first.is_empty()).then_some(Ok(first));
    futures::stream::unfold(
        (first, rest, 0usize),
        move |(first, mut rest, sent)| async move {
            let chunk = match first {
                Some(chunk) => chunk,
                None => rest.recv().await?,
            };
            let result = chunk.map_err(std::io::Error::other).and_then(|bytes| {
                let sent = sent + bytes.len();
                if sent > limit {
                    Err(std::io::Error::other(format!(
                        "response body larger than {limit} bytes"
                    )))
                } else {
                    Ok(bytes)
                }
            });
            let sent = sent + result.as_ref().map_or(0, Vec::len);
            Some((result.map(bytes::Bytes::from), (None, rest, sent)))
        },
    )
}
