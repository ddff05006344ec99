//! `/v1/functions/{name}/logs`: captured console output, as JSON or as a
//! Server-Sent Events stream (`?follow=true`, or `Accept: text/event-stream`).

use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use isola_store::LogRecord;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

/// Query of the logs endpoint.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// Only lines after this sequence number.
    #[serde(default)]
    after: i64,
    /// Most lines returned (JSON) or sent per poll (SSE).
    #[serde(default = "default_limit")]
    limit: u32,
    /// Keep the stream open and send new lines as they come.
    #[serde(default)]
    follow: bool,
}

fn default_limit() -> u32 {
    500
}

const POLL: Duration = Duration::from_millis(250);

pub async fn logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = query.limit.clamp(1, 5000);
    // Fails with 404 for an unknown function before any stream starts.
    let first = state.registry.logs(&name, query.after, limit).await?;
    let wants_sse = query.follow
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        return Ok(Json(first).into_response());
    }
    let stream = log_events(state, name, first, query.after, limit, query.follow);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct Cursor {
    state: AppState,
    name: String,
    pending: std::vec::IntoIter<LogRecord>,
    after: i64,
    limit: u32,
    follow: bool,
    done: bool,
}

fn log_events(
    state: AppState,
    name: String,
    first: Vec<LogRecord>,
    after: i64,
    limit: u32,
    follow: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // An empty first page must not rewind the cursor to the beginning.
    let after = first.last().map_or(after, |l| l.seq.max(after));
    let cursor = Cursor {
        state,
        name,
        pending: first.into_iter(),
        after,
        limit,
        follow,
        done: false,
    };
    stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(line) = cursor.pending.next() {
                cursor.after = cursor.after.max(line.seq);
                let event = Event::default()
                    .id(line.seq.to_string())
                    .event("log")
                    .json_data(&line)
                    .unwrap_or_else(|_| Event::default().comment("unencodable line"));
                return Some((Ok(event), cursor));
            }
            if cursor.done || !cursor.follow {
                return None;
            }
            tokio::time::sleep(POLL).await;
            match cursor
                .state
                .registry
                .logs(&cursor.name, cursor.after, cursor.limit)
                .await
            {
                Ok(lines) => cursor.pending = lines.into_iter(),
                Err(_) => cursor.done = true, // the function is gone
            }
        }
    })
}
