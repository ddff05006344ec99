//! One home for the answer to an invocation: its outcome (or an error on
//! the way to it) turned into an HTTP response.
//!
//! Two audiences get different answers. The owner (the authenticated
//! `/v1/functions/<name>/invoke`) sees a failure's code, message and stack.
//! The public (function traffic by path or Host, and `isola dev`) sees what
//! workerd and `deno serve` send for a throwing handler: a bare
//! `500 Internal Server Error` with no content type and nothing about the
//! cause; the owner finds the cause in the invocation record and its logs.

use crate::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use isola_core::{ErrorCode, HttpResponse, InvocationMetrics, InvocationOutput, Outcome};

/// Who the answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Anyone on the internet: no internals.
    Public,
    /// The function's owner: full error details.
    Owner,
}

/// The response to a finished invocation, with its `x-isola-*` headers.
pub fn invocation(audience: Audience, limit: usize, id: &str, outcome: Outcome) -> Response {
    let mut response = match outcome.result {
        Ok(InvocationOutput::Http(http)) => {
            into_response(limit, http).unwrap_or_else(|error| failure(audience, error))
        }
        Ok(InvocationOutput::Json(value)) => axum::Json(value).into_response(),
        Err(error) => match audience {
            Audience::Owner => ApiError::from(error).into_response(),
            Audience::Public if error.code == ErrorCode::Unavailable => unavailable(),
            Audience::Public if error.code == ErrorCode::WorkerLost => {
                plain(StatusCode::BAD_GATEWAY)
            }
            Audience::Public => plain(StatusCode::INTERNAL_SERVER_ERROR),
        },
    };
    add_metadata(&mut response, audience, id, &outcome.metrics);
    response
}

/// The response to an error before or around an invocation (unknown
/// function, body too large, storage failure).
pub fn failure(audience: Audience, error: ApiError) -> Response {
    if audience == Audience::Owner {
        return error.into_response();
    }
    match error.status {
        // What the client can act on, and says nothing about the function.
        StatusCode::PAYLOAD_TOO_LARGE => error.into_response(),
        StatusCode::BAD_GATEWAY if error.code == "response_too_large" => error.into_response(),
        StatusCode::NOT_FOUND
        | StatusCode::BAD_REQUEST
        | StatusCode::BAD_GATEWAY
        | StatusCode::REQUEST_TIMEOUT => plain(error.status),
        StatusCode::SERVICE_UNAVAILABLE => unavailable(),
        _ => plain(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// A bare response: the status's reason as the body, no content type.
pub fn plain(status: StatusCode) -> Response {
    let mut response = Response::new(Body::from(status.canonical_reason().unwrap_or("Error")));
    *response.status_mut() = status;
    response
}

/// 503 with `Retry-After: 1`: the node is overloaded or shutting down.
fn unavailable() -> Response {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE);
    crate::error::retry_soon(&mut response);
    response
}

/// Adds the `x-isola-*` headers describing an invocation: its id for
/// everyone (the key to its record and logs), and its duration, CPU time
/// and cold start for the owner only (timings of a function's work are not
/// for the public).
pub fn add_metadata(
    response: &mut Response,
    audience: Audience,
    id: &str,
    metrics: &InvocationMetrics,
) {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert(HeaderName::from_static("x-isola-invocation-id"), id);
    }
    if audience == Audience::Public {
        return;
    }
    let cold = if metrics.cold_start { "true" } else { "false" };
    for (name, value) in [
        (
            "x-isola-duration-us",
            HeaderValue::from(metrics.duration_us),
        ),
        ("x-isola-cpu-us", HeaderValue::from(metrics.cpu_us)),
        ("x-isola-cold-start", HeaderValue::from_static(cold)),
    ] {
        headers.insert(HeaderName::from_static(name), value);
    }
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
    if status.is_informational() {
        // A 101 goes out only through the WebSocket path, for a request
        // that asked for one.
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "invalid_response",
            format!("the function answered {status}, which only a WebSocket upgrade may"),
        ));
    }
    let mut response = Response::builder().status(status);
    for (name, value) in &http.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        if !passes_through(&name) {
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

/// Whether a header a function sets goes out: not the framing and
/// hop-by-hop headers (RFC 9110 §7.6.1), which the server sets for the
/// connection, and not isola's own `x-isola-*`, which only the node sets.
fn passes_through(name: &HeaderName) -> bool {
    const HOP_BY_HOP: [&str; 6] = [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
    ];
    !(name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || HOP_BY_HOP.contains(&name.as_str())
        || name.as_str().starts_with("x-isola-"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: ErrorCode) -> Outcome {
        Outcome::failed(isola_core::FunctionError {
            code,
            message: "secret detail".into(),
            stack: Some("Error: secret detail\n    at ext:core/x.js:1:1".into()),
        })
    }

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_public_sees_a_bare_500_and_the_owner_the_details() {
        let public = invocation(
            Audience::Public,
            1,
            "inv_1",
            failed(ErrorCode::UncaughtException),
        );
        assert_eq!(public.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(public.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(public.headers()["x-isola-invocation-id"], "inv_1");
        assert!(public.headers().get("x-isola-cpu-us").is_none());
        assert!(public.headers().get("x-isola-duration-us").is_none());
        assert_eq!(body_of(public).await, "Internal Server Error");
        let owner = invocation(
            Audience::Owner,
            1,
            "inv_1",
            failed(ErrorCode::UncaughtException),
        );
        assert_eq!(owner.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(owner.headers().get("x-isola-cpu-us").is_some());
        let body = body_of(owner).await;
        assert!(body.contains("uncaught_exception") && body.contains("secret detail"));
    }

    #[test]
    fn a_function_cannot_set_hop_by_hop_or_isola_headers() {
        let http = HttpResponse {
            status: 200,
            headers: [
                ("Upgrade", "h2c"),
                ("keep-alive", "timeout=1"),
                ("X-Isola-Cpu-Us", "1"),
                ("x-kept", "yes"),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
            body: Vec::new(),
            rest: Default::default(),
            upgrade: Default::default(),
        };
        let response = into_response(1024, http).unwrap();
        let names: Vec<_> = response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[tokio::test]
    async fn a_lost_worker_is_a_bare_502_for_the_public_and_said_to_the_owner() {
        let response = invocation(Audience::Public, 1, "i", failed(ErrorCode::WorkerLost));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(body_of(response).await, "Bad Gateway");
        let response = invocation(Audience::Owner, 1, "i", failed(ErrorCode::WorkerLost));
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(body_of(response).await.contains("worker_lost"));
    }

    #[tokio::test]
    async fn overload_is_a_bare_503_with_retry_after() {
        let response = invocation(Audience::Public, 1, "i", failed(ErrorCode::Unavailable));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(body_of(response).await, "Service Unavailable");
        let storage = failure(
            Audience::Public,
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "db at /x"),
        );
        assert_eq!(body_of(storage).await, "Internal Server Error");
        let missing = failure(Audience::Public, ApiError::not_found("function \"x\""));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(body_of(missing).await, "Not Found");
        let large = failure(Audience::Public, ApiError::too_large(10));
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
