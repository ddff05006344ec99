//! Where a queued (asynchronous) invocation stands: what
//! `GET /v1/functions/<name>/invocations/<id>` answers for an id that
//! `POST /v1/functions/<name>/invoke?async=true` gave.

use crate::FunctionError;
use serde::{Deserialize, Serialize};

/// Most bytes of a queued invocation's JSON result kept for its caller;
/// a larger one is left out (`output_omitted`).
pub const MAX_KEPT_OUTPUT: usize = 64 << 10;

/// How far a queued invocation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuedState {
    /// Waiting for a worker, or running.
    Queued,
    /// It ran and succeeded.
    Ok,
    /// It ran and failed, or was given up after its last delivery.
    Error,
    /// Its workers stopped under it each time it was delivered: it was set
    /// aside (a dead letter) without running again.
    Dead,
}

/// A queued invocation and, once it ran, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedInvocation {
    /// The invocation's id.
    pub id: String,
    /// The function it belongs to.
    pub function: String,
    /// How far it got.
    pub state: QueuedState,
    /// Times a worker took it.
    pub deliveries: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FunctionError>,
    /// A JSON handler's result; `{"status": n}` for a `fetch` handler's
    /// response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// The result was larger than [`MAX_KEPT_OUTPUT`] (64 KiB) and is not
    /// kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_omitted: bool,
}

impl QueuedInvocation {
    /// A newly queued invocation.
    pub fn queued(id: &str, function: &str) -> Self {
        Self {
            id: id.to_string(),
            function: function.to_string(),
            state: QueuedState::Queued,
            deliveries: 0,
            error: None,
            output: None,
            output_omitted: false,
        }
    }

    /// It ran, with `result`, at its `deliveries`th delivery.
    pub fn finished(
        mut self,
        deliveries: u64,
        result: &Result<crate::InvocationOutput, FunctionError>,
    ) -> Self {
        self.deliveries = deliveries;
        match result {
            Ok(output) => {
                self.state = QueuedState::Ok;
                let value = match output {
                    crate::InvocationOutput::Json(value) => value.clone(),
                    crate::InvocationOutput::Http(response) => {
                        serde_json::json!({ "status": response.status })
                    }
                };
                let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
                if size <= MAX_KEPT_OUTPUT {
                    self.output = Some(value);
                } else {
                    self.output_omitted = true;
                }
            }
            Err(error) => {
                self.state = QueuedState::Error;
                self.error = Some(error.clone());
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, InvocationOutput};

    #[test]
    fn results_are_kept_unless_too_large() {
        let small = QueuedInvocation::queued("i", "f")
            .finished(1, &Ok(InvocationOutput::Json(serde_json::json!({"n": 1}))));
        assert_eq!(small.state, QueuedState::Ok);
        assert_eq!(small.output, Some(serde_json::json!({"n": 1})));
        let big = "x".repeat(MAX_KEPT_OUTPUT);
        let large = QueuedInvocation::queued("i", "f")
            .finished(2, &Ok(InvocationOutput::Json(serde_json::json!(big))));
        assert_eq!((large.output, large.output_omitted), (None, true));
        let failed = QueuedInvocation::queued("i", "f")
            .finished(3, &Err(FunctionError::new(ErrorCode::CpuLimit, "too long")));
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["state"], "error");
        assert_eq!(json["error"]["code"], "cpu_limit");
        assert_eq!(json["deliveries"], 3);
        assert!(json.get("output").is_none());
    }
}
