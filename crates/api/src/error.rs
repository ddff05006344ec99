//! API errors: an HTTP status, a stable code and a message, sent as
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use isola_core::{ErrorCode, FunctionError};
use isola_store::StoreError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: String,
    /// For people.
    pub message: String,
    /// Extra detail (a function error's stack), when there is one.
    pub stack: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            stack: None,
        }
    }

    /// 400 with code `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 413 with code `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match error {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::Shared(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%error, "storage failure");
        }
        Self::new(status, error.code(), error.to_string())
    }
}

/// The HTTP status for a function's error.
pub fn function_error_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::SyntaxError
        | ErrorCode::LinkError
        | ErrorCode::InvalidFunction
        | ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::WallTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::WorkerLost => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<FunctionError> for ApiError {
    fn from(error: FunctionError) -> Self {
        Self {
            status: function_error_status(error.code),
            code: error.code.as_str().to_string(),
            message: error.message,
            stack: error.stack,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(stack) = self.stack {
            error["stack"] = stack.into();
        }
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": error })),
        )
            .into_response();
        if self.status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            retry_soon(&mut response);
        }
        response
    }
}

/// Says when to come back (`Retry-After: 1`): overload is temporary.
pub(crate) fn retry_soon(response: &mut Response) {
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
}
