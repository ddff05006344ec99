//! Turning deno_core's errors into isola's [`FunctionError`]s.

use deno_core::error::{CoreError, CoreErrorKind, JsError};
use isola_core::{ErrorCode, FunctionError};

/// Where in a function's life an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading, linking and evaluating the module.
    Load,
    /// Running the handler.
    Invoke,
}

/// The error for a JavaScript exception.
pub fn from_js_error(error: &JsError, phase: Phase) -> FunctionError {
    let code = match (phase, error.name.as_deref()) {
        (Phase::Load, Some("SyntaxError")) if error.frames.is_empty() || is_parse_error(error) => {
            ErrorCode::SyntaxError
        }
        _ => ErrorCode::UncaughtException,
    };
    let message = error.exception_message.as_str();
    let message = message.strip_prefix("Uncaught ").unwrap_or(message);
    let message = message
        .strip_prefix("(in promise) ")
        .unwrap_or(message)
        .to_string();
    let stack = error.stack.as_deref().map(user_frames);
    if code == ErrorCode::SyntaxError {
        if let Some(location) = error.frames.first().and_then(|f| f.maybe_format_location()) {
            let message = format!("{message} at {location}");
            let stack = format!(
                "{}\n    at {location}",
                stack.as_deref().unwrap_or(&message)
            );
            return FunctionError::new(code, message).with_stack(Some(stack));
        }
    }
    FunctionError::new(code, message).with_stack(stack)
}

/// A stack without the platform's own frames (`ext:` and `node:` modules,
/// the bootstrap): what is left is the function's code, which is all its
/// owner can act on, and nothing about the runtime's internals.
pub fn user_frames(stack: &str) -> String {
    stack
        .lines()
        .filter(|line| {
            let frame = line.trim_start();
            !(frame.starts_with("at ") && (frame.contains("ext:") || frame.contains("node:")))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_parse_error(error: &JsError) -> bool {
    // V8 reports parse errors with the module as the only frame.
    error.frames.len() <= 1 && error.frames.iter().all(|f| f.function_name.is_none())
}

/// The error for anything deno_core returns.
pub fn from_core_error(error: CoreError, phase: Phase) -> FunctionError {
    match *error.0 {
        CoreErrorKind::Js(js) => from_js_error(&js, phase),
        CoreErrorKind::CouldNotExecute { error, .. } => from_core_error(CoreError(error), phase),
        CoreErrorKind::Parse(parse) => {
            FunctionError::new(ErrorCode::SyntaxError, parse.to_string())
        }
        CoreErrorKind::JsBox(boxed) if phase == Phase::Load => {
            use deno_error::JsErrorClass;
            let code = if boxed.get_class() == "SyntaxError" {
                ErrorCode::SyntaxError
            } else {
                ErrorCode::LinkError
            };
            FunctionError::new(code, boxed.get_message().to_string())
        }
        CoreErrorKind::ExecutionTerminated => {
            FunctionError::new(ErrorCode::Internal, "execution was terminated")
        }
        CoreErrorKind::PendingPromiseResolution => FunctionError::new(
            ErrorCode::UncaughtException,
            "the function's promise never settled: nothing is left that could settle it",
        ),
        other if phase == Phase::Load => {
            FunctionError::new(ErrorCode::LinkError, other.to_string())
        }
        other => FunctionError::new(ErrorCode::UncaughtException, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_frames_are_dropped_from_stacks() {
        let stack = "Error: boom\n    at handler (isola:///main.js:3:9)\n    at Object.invokeFetch (ext:isola_runtime/bootstrap.js:512:33)\n    at ext:deno_web/06_streams.js:10:2\n    at isola:///main.js:9:1";
        assert_eq!(
            user_frames(stack),
            "Error: boom\n    at handler (isola:///main.js:3:9)\n    at isola:///main.js:9:1"
        );
    }
}
