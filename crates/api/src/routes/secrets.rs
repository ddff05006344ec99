//! `/v1/functions/{name}/secrets`: a function's secrets by name (values are
//! never shown). Setting or removing one deploys the active deployment
//! again with the change, validated like any deployment, so each
//! deployment records the secrets it ran with and a rollback brings back
//! the secrets of its time.

use super::deployments::{active_deployment, deploy};
use super::read_body;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use isola_store::{DeploymentInfo, NewDeployment};
use serde::Serialize;

/// Largest secret value, in bytes.
const MAX_SECRET_BYTES: usize = 64 << 10;

/// The names of a function's secrets.
#[derive(Debug, Serialize)]
pub struct SecretNames {
    names: Vec<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<SecretNames>, ApiError> {
    state.registry.function(&name).await?;
    let names = active_deployment(&state, &name)
        .await?
        .map(|deployment| deployment.secrets.into_keys().collect())
        .unwrap_or_default();
    Ok(Json(SecretNames { names }))
}

pub async fn put(
    State(state): State<AppState>,
    Path((name, secret)): Path<(String, String)>,
    body: Body,
) -> Result<Json<DeploymentInfo>, ApiError> {
    let value = read_body(body, MAX_SECRET_BYTES).await?;
    let value = String::from_utf8(value.to_vec())
        .map_err(|_| ApiError::bad_request("a secret's value must be UTF-8 text"))?;
    state.registry.function(&name).await?;
    let _changing = state.deploys.lock(&name).await;
    let mut deployment = deployed(&state, &name).await?;
    deployment.secrets.insert(secret, value);
    Ok(Json(deploy(&state, &name, deployment, true).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((name, secret)): Path<(String, String)>,
) -> Result<Json<DeploymentInfo>, ApiError> {
    state.registry.function(&name).await?;
    let _changing = state.deploys.lock(&name).await;
    let mut deployment = deployed(&state, &name).await?;
    if deployment.secrets.remove(&secret).is_none() {
        return Err(ApiError::not_found(format!(
            "function {name:?} has no secret {secret:?}"
        )));
    }
    Ok(Json(deploy(&state, &name, deployment, true).await?))
}

/// The function's active deployment, or why there is none to change.
async fn deployed(state: &AppState, name: &str) -> Result<NewDeployment, ApiError> {
    state.registry.function(name).await?;
    active_deployment(state, name).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_active_deployment",
            format!(
                "function {name:?} has no active deployment yet: deploy it first (secrets go with its deployments)"
            ),
        )
    })
}
