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

/// Prints an error of isola itself or of its use and returns exit code 2.
pub fn report(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(2)
}
