//! The errors a function invocation can end with, each with a stable code.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable, machine-readable error codes. They are part of isola's public
/// interface (CLI output, HTTP API): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The module does not parse.
    SyntaxError,
    /// An import cannot be resolved or linked.
    LinkError,
    /// The module has no usable default export.
    InvalidFunction,
    /// The payload or request given to the function is malformed.
    InvalidInput,
    /// The function threw (or rejected with) a value it did not catch.
    UncaughtException,
    /// The function's return value cannot be turned into a result.
    InvalidOutput,
    /// The function used more CPU time than its limit.
    CpuLimit,
    /// The function used more memory than its limit.
    MemoryLimit,
    /// The invocation took longer than its wall-clock limit.
    WallTimeout,
    /// The node is shutting down or its queue is full.
    Unavailable,
    /// The node running the invocation stopped before answering (in a
    /// cluster); the invocation may have partly run.
    WorkerLost,
    /// A fault inside isola itself.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `cpu_limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SyntaxError => "syntax_error",
            Self::LinkError => "link_error",
            Self::InvalidFunction => "invalid_function",
            Self::InvalidInput => "invalid_input",
            Self::UncaughtException => "uncaught_exception",
            Self::InvalidOutput => "invalid_output",
            Self::CpuLimit => "cpu_limit",
            Self::MemoryLimit => "memory_limit",
            Self::WallTimeout => "wall_timeout",
            Self::Unavailable => "unavailable",
            Self::WorkerLost => "worker_lost",
            Self::Internal => "internal",
        }
    }

    /// Whether the error was caused by the function (as opposed to isola).
    pub fn is_function_fault(self) -> bool {
        !matches!(self, Self::Unavailable | Self::WorkerLost | Self::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invocation that failed: a stable code, a human message and, for
/// JavaScript errors, the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FunctionError {
    /// The stable error code.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// The JavaScript stack, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

impl FunctionError {
    /// Its message with its stack (which usually repeats the message on
    /// its first line): for the owner's eyes and records only.
    pub fn detail(&self) -> String {
        match &self.stack {
            Some(stack) if stack.contains(&self.message) => stack.clone(),
            Some(stack) => format!("{}\n{stack}", self.message),
            None => self.message.clone(),
        }
    }

    /// An error with a code and a message and no stack.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            stack: None,
        }
    }

    /// Adds a JavaScript stack.
    pub fn with_stack(mut self, stack: Option<String>) -> Self {
        self.stack = stack;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [ErrorCode::CpuLimit, ErrorCode::UncaughtException] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn error_json_omits_missing_stack() {
        let err = FunctionError::new(ErrorCode::WallTimeout, "too slow");
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["code"], "wall_timeout");
        assert!(json.get("stack").is_none());
        assert_eq!(err.to_string(), "wall_timeout: too slow");
    }
}
