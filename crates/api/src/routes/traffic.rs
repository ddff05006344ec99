//! Function traffic: `/fn/<name>/<path>` and `<name>.<base-domain>` pass
//! the whole request to the function's `fetch` handler and send its
//! response back. Failures are answered for the public: no internals.

use super::{read_body, run};
use crate::respond::{self, Audience};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use isola_core::{BodyStream, HttpRequest, InvocationInput};

pub async fn by_path_root(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    forward(state, name, String::new(), request).await
}

pub async fn by_path(
    State(state): State<AppState>,
    Path((name, _)): Path<(String, String)>,
    request: Request,
) -> Response {
    // The path as it came, still percent-encoded: the function's URL.
    let path = request
        .uri()
        .path()
        .strip_prefix("/fn/")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, path)| path)
        .to_string();
    forward(state, name, path, request).await
}

/// Everything no other route matched: a function by Host header, or 404.
pub async fn by_host(State(state): State<AppState>, request: Request) -> Response {
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
        return respond::plain(StatusCode::NOT_FOUND);
    };
    let path = request.uri().path().trim_start_matches('/').to_string();
    forward(state, name, path, request).await
}

async fn forward(state: AppState, name: String, path: String, mut request: Request) -> Response {
    let method = request.method().clone();
    let limit = state.config.max_request_bytes;
    let upgrade = match crate::websocket::take(&mut request) {
        Some(Err(refused)) => return refused,
        Some(Ok(upgrade)) => Some(upgrade),
        None => None,
    };
    let input = match to_invocation_input(request, &path, limit).await {
        Ok(input) => input,
        Err(error) => return respond::failure(Audience::Public, error),
    };
    if let Some(upgrade) = upgrade {
        return crate::websocket::serve(state, name, input, upgrade).await;
    }
    let (response, metrics) = match run(&state, &name, input).await {
        Ok((id, outcome)) => {
            let metrics = outcome.metrics;
            let limit = state.config.max_response_bytes;
            let response = respond::invocation(Audience::Public, limit, &id, outcome);
            (response, Some(metrics))
        }
        Err(error) => (respond::failure(Audience::Public, error), None),
    };
    // The access log (`isola serve --access-log`); off, this costs one check.
    tracing::info!(
        target: "isola::access",
        // Escaped: a request cannot forge log lines or reach a terminal.
        function = %isola_core::text::escape_controls(&name),
        method = %isola_core::text::escape_controls(method.as_str()),
        path = %isola_core::text::escape_controls(&format!("/{path}")),
        status = response.status().as_u16(),
        duration_us = metrics.map_or(0, |m| m.duration_us),
        cpu_us = metrics.map_or(0, |m| m.cpu_us),
        cold = metrics.is_some_and(|m| m.cold_start),
    );
    response
}

/// The invocation input for an HTTP request to a function, with `path`
/// relative to the function's root.
pub async fn to_invocation_input(
    request: Request,
    path: &str,
    limit: usize,
) -> Result<InvocationInput, ApiError> {
    let (parts, body) = request.into_parts();
    // The function gets the URL as it is, unparsed (as `deno serve` gives
    // it), so only a Host that makes a valid URL goes in it.
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| is_url_host(host))
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
        super::drain(body.into_data_stream());
        return Err(ApiError::too_large(limit));
    }
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let (body, rest) = if http_body::Body::is_end_stream(&body) {
        // Nothing to read (a GET): no read, and no timer set for one.
        (Vec::new(), BodyStream::default())
    } else if chunked || declared.is_some_and(|length| length > STREAM_FROM) {
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

/// Whether `host` (a Host header) is a host name, an IPv4 address or a
/// bracketed IPv6 address, with an optional numeric port: what can stand
/// in a URL as it is.
fn is_url_host(host: &str) -> bool {
    let (name, port) = if host.starts_with('[') {
        let Some(end) = host.find(']') else {
            return false;
        };
        match &host[end + 1..] {
            "" => (&host[..=end], None),
            rest => match rest.strip_prefix(':') {
                Some(port) => (&host[..=end], Some(port)),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    port_ok && name_ok
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
        loop {
            let frame = match tokio::time::timeout(super::BODY_IDLE, frames.next()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    let _ = sender.send(Err(super::body_stalled().message)).await;
                    break;
                }
            };
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

#[cfg(test)]
mod tests {
    #[test]
    fn only_hosts_that_make_a_url() {
        for good in [
            "a",
            "a.example",
            "a.example:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:80",
            "x_y",
        ] {
            assert!(super::is_url_host(good), "{good}");
        }
        for bad in [
            "",
            "a:b:c",
            "[",
            "]]:::",
            "a:",
            "a:99999",
            "a b",
            "evil/path@x",
            "[zz]",
            "a@b",
            "::1",
        ] {
            assert!(!super::is_url_host(bad), "{bad}");
        }
    }
}
