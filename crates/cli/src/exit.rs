//! Exit codes scripts can rely on.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Success: exit code 0.
    Success,
    /// The function ran and failed (its error is printed): exit code 1.
    FunctionFailed,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::SUCCESS,
            ExitStatus::FunctionFailed => ExitCode::from(1),
        }
    }
}

/// Prints an error and returns its exit code: 3 when the server refused
/// the request (4xx), 4 when it failed or could not be reached, 2 for
/// usage and local errors. With `json`, the error is a JSON object on
/// stderr: `{"error": {"code", "message", "exit"}}`.
pub fn report(error: anyhow::Error, json: bool) -> ExitCode {
    let (code, exit) = if let Some(server) = error.downcast_ref::<crate::client::ServerError>() {
        let exit = if server.status.is_client_error() {
            3
        } else {
            4
        };
        (server.code.clone(), exit)
    } else if error.is::<crate::client::Unreachable>()
        || error.chain().any(|cause| cause.is::<reqwest::Error>())
    {
        ("unreachable".to_string(), 4)
    } else {
        ("error".to_string(), 2)
    };
    if json {
        let message = match error.downcast_ref::<crate::client::ServerError>() {
            Some(server) => server.message.clone(),
            None => format!("{error:#}"),
        };
        let object =
            serde_json::json!({ "error": { "code": code, "message": message, "exit": exit } });
        eprintln!("{object}");
    } else {
        eprintln!("error: {error:#}");
    }
    ExitCode::from(exit)
}
