//! `/v1/functions/{name}/deployments`: upload (validate, store, activate),
//! list, activate, roll back.

use super::read_body;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use isola_core::{ErrorCode, FunctionError, FunctionSource, RuntimeKind, SourceFile};
use isola_store::{DeploymentInfo, NewDeployment};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Query of an upload.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// Store without activating (default: activate).
    #[serde(default)]
    activate: Option<bool>,
    /// `replace`: the upload's variables are all the function's (a
    /// project's `[vars]`); by default it keeps the active deployment's
    /// variables it does not set. Secrets are always kept.
    #[serde(default)]
    env: Option<String>,
}

/// Parses an upload: a JSON deployment, or a bare module as the body.
fn parse_upload(headers: &HeaderMap, body: &[u8]) -> Result<NewDeployment, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") {
        return serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid deployment JSON: {e}")));
    }
    // A bare body is one module: WebAssembly (by its magic) or JavaScript.
    let entry = if RuntimeKind::detect(body).is_wasm() {
        "main.wasm"
    } else {
        std::str::from_utf8(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the module is neither WebAssembly nor valid UTF-8 text: {e}"
            ))
        })?;
        "main.js"
    };
    Ok(NewDeployment {
        files: vec![SourceFile {
            path: entry.into(),
            code: body.to_vec(),
        }],
        entry: entry.into(),
        limits: Default::default(),
        env: Default::default(),
        secrets: Default::default(),
        kv_binding: None,
        allowed_hosts: Vec::new(),
    })
}

pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<DeploymentInfo>), ApiError> {
    state.registry.function(&name).await?;
    let body = read_body(body, state.config.max_deploy_bytes).await?;
    let mut deployment = parse_upload(&headers, &body)?;
    let _changing = state.deploys.lock(&name).await;
    // Variables and secrets belong to the function: a deployment keeps those
    // of the active one that it does not set itself.
    if let Some(active) = active_deployment(&state, &name).await? {
        if query.env.as_deref() != Some("replace") {
            inherit(&mut deployment.env, active.env);
        }
        inherit(&mut deployment.secrets, active.secrets);
    }
    let activate = query.activate.unwrap_or(true);
    let stored = deploy(&state, &name, deployment, activate).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Adds to `own` what `inherited` has and it does not.
fn inherit(own: &mut BTreeMap<String, String>, inherited: BTreeMap<String, String>) {
    for (key, value) in inherited {
        own.entry(key).or_insert(value);
    }
}

/// The function's active deployment as it was uploaded (secret values
/// included), if it has one.
pub(super) async fn active_deployment(
    state: &AppState,
    name: &str,
) -> Result<Option<NewDeployment>, ApiError> {
    let Some((info, mut source)) = state.registry.active_source(name).await? else {
        return Ok(None);
    };
    // The source's env holds the variables and, over them, the secrets.
    let secrets = info
        .secret_names
        .iter()
        .filter_map(|secret| Some((secret.clone(), source.env.remove(secret)?)))
        .collect();
    Ok(Some(NewDeployment {
        files: source.files,
        entry: source.entry,
        limits: source.limits,
        env: info.env,
        secrets,
        kv_binding: source.kv_binding,
        allowed_hosts: source.allowed_hosts,
    }))
}

/// Validates `deployment` (compiled, linked and evaluated in an isolate,
/// which stays warm), then stores it, activated when `activate`.
pub(super) async fn deploy(
    state: &AppState,
    name: &str,
    deployment: NewDeployment,
    activate: bool,
) -> Result<DeploymentInfo, ApiError> {
    deployment.validate()?;
    let hash = state.registry.deployment_hash(&deployment);
    let mut env = deployment.env.clone();
    env.extend(deployment.secrets.clone());
    let source = FunctionSource {
        id: instance_key(name, &hash),
        name: name.to_string(),
        entry: deployment.entry.clone(),
        files: deployment.files.clone(),
        limits: deployment.limits,
        env,
        kv_binding: deployment.kv_binding.clone(),
        allowed_hosts: deployment.allowed_hosts.clone(),
        runtime: deployment
            .files
            .iter()
            .find(|f| f.path == deployment.entry)
            .map_or(RuntimeKind::Js, |f| RuntimeKind::detect(&f.code)),
    };
    state
        .invoker
        .prepare(Arc::new(source))
        .await
        .map_err(refused_deployment)?;
    let stored = state
        .registry
        .create_deployment(name, deployment, activate)
        .await?;
    if activate {
        state.active.refresh(name).await?;
    }
    Ok(stored)
}

/// The answer to a deployment that failed to load. What its code did (a
/// top-level throw, a limit broken while evaluating) is the uploader's
/// error (400, with where it happened); only the node's own failures are
/// 5xx.
fn refused_deployment(error: FunctionError) -> ApiError {
    if matches!(error.code, ErrorCode::Internal | ErrorCode::Unavailable) {
        return error.into();
    }
    let location = error.stack.as_deref().and_then(first_location);
    let message = match location {
        Some(at) if !error.message.contains(&at) => format!("{} (at {at})", error.message),
        _ => error.message.clone(),
    };
    let mut refused = ApiError::from(error);
    refused.status = StatusCode::BAD_REQUEST;
    refused.message = message;
    refused
}

/// `main.js:2:7` from the first frame of a stack in the function's files.
fn first_location(stack: &str) -> Option<String> {
    let at = stack.find("isola:///")? + "isola:///".len();
    let rest = &stack[at..];
    let end = rest.find([')', '\n']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// The warm-pool key of a deployment: same content, same instances.
fn instance_key(name: &str, hash: &str) -> String {
    isola_store::DeploymentInfo::key_for(name, hash)
}

pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<DeploymentInfo>>, ApiError> {
    Ok(Json(state.registry.deployments(&name).await?))
}

pub async fn activate(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<Json<DeploymentInfo>, ApiError> {
    state.registry.function(&name).await?;
    let _changing = state.deploys.lock(&name).await;
    let info = state.registry.activate(&name, version).await?;
    state.active.refresh(&name).await?;
    Ok(Json(info))
}

/// Body of a rollback: the version to go back to, or the one before the active one.
#[derive(Debug, Default, Deserialize)]
pub struct Rollback {
    version: Option<u32>,
}

pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Option<Json<Rollback>>,
) -> Result<Json<DeploymentInfo>, ApiError> {
    let requested = body.map(|Json(b)| b).unwrap_or_default().version;
    let version = match requested {
        Some(version) => version,
        None => {
            let function = state.registry.function(&name).await?;
            let active = function.active_version.unwrap_or(u32::MAX);
            let deployments = state.registry.deployments(&name).await?;
            deployments
                .iter()
                .map(|d| d.version)
                .filter(|v| *v < active)
                .max()
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        format!("function {name:?} has no earlier deployment to roll back to"),
                    )
                })?
        }
    };
    activate(State(state), Path((name, version))).await
}
