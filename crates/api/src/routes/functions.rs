//! `/v1/functions`: create, list, get, delete.

use crate::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use isola_store::FunctionInfo;
use serde::Deserialize;

/// Body of a create request.
#[derive(Debug, Deserialize)]
pub struct CreateFunction {
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateFunction>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<FunctionInfo>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let function = state.registry.create_function(&body.name).await?;
    state.active.refresh(&function.name).await?;
    Ok((StatusCode::CREATED, Json(function)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<FunctionInfo>>, ApiError> {
    Ok(Json(state.registry.functions().await?))
}

/// What `GET /v1/status` answers: the node at a glance.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// The node's version.
    version: &'static str,
    /// Functions it holds.
    functions: usize,
    /// Functions with an active deployment.
    deployed: usize,
    /// Warm isolates and what runs them.
    runtime: isola_core::InvokerStats,
    /// In a cluster, the nodes alive (heard from in the last seconds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<isola_core::NodeInfo>,
}

pub async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let functions = state.registry.functions().await?;
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        deployed: functions
            .iter()
            .filter(|f| f.active_version.is_some())
            .count(),
        functions: functions.len(),
        runtime: state.invoker.stats(),
        nodes: state.invoker.nodes(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    Ok(Json(state.registry.function(&name).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete_function(&name).await?;
    state.active.refresh(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
