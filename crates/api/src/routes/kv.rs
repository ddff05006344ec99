//! `/v1/functions/{name}/kv`: read and write a function's KV namespace
//! from outside (the `isola kv` commands).

use super::read_body;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use isola_kv::{KvError, KvStore, ListPage};
use serde::Deserialize;
use std::sync::Arc;

impl From<KvError> for ApiError {
    fn from(error: KvError) -> Self {
        let status = match error {
            KvError::Invalid(_) => StatusCode::BAD_REQUEST,
            KvError::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
            KvError::Storage(_) | KvError::Indeterminate(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

/// The KV store, after checking that the function exists.
async fn store_for(state: &AppState, name: &str) -> Result<Arc<dyn KvStore>, ApiError> {
    state.registry.function(name).await?;
    state.kv.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "kv_unavailable",
            "this node has no KV store",
        )
    })
}

/// Query of a list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default = "default_limit")]
    limit: usize,
    cursor: Option<String>,
}

fn default_limit() -> usize {
    1000
}

pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListPage>, ApiError> {
    let store = store_for(&state, &name).await?;
    Ok(Json(
        store
            .list(&name, &query.prefix, query.limit, query.cursor)
            .await?,
    ))
}

pub async fn get(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store = store_for(&state, &name).await?;
    let entry = store.get(&name, &key).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "key {key:?} not found in the KV of function {name:?}"
        ))
    })?;
    let mut response = entry.value.into_response();
    if let Ok(version) = HeaderValue::from_str(&entry.version.to_string()) {
        response.headers_mut().insert("x-isola-kv-version", version);
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Query of a put.
#[derive(Debug, Deserialize)]
pub struct PutQuery {
    /// Seconds until the key expires.
    ttl: Option<u64>,
}

pub async fn put(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<PutQuery>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = store_for(&state, &name).await?;
    let limit = store.limits().max_value_bytes;
    let value = read_body(body, limit).await?;
    let version = store.put(&name, &key, value.to_vec(), query.ttl).await?;
    Ok(Json(serde_json::json!({ "key": key, "version": version })))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let store = store_for(&state, &name).await?;
    if store.get(&name, &key).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "function {name:?} has no KV key {key:?}"
        )));
    }
    store.delete(&name, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
