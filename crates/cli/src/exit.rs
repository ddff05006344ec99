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
/// usage and local errors.
pub fn report(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    if let Some(server) = error.downcast_ref::<crate::client::ServerError>() {
        return ExitCode::from(if server.status.is_client_error() {
            3
        } else {
            4
        });
    }
    if error.chain().any(|cause| cause.is::<reqwest::Error>()) {
        return ExitCode::from(4);
    }
    ExitCode::from(2)
}
