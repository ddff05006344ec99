//! Calling a handler: directly, then one microtask checkpoint, reading a
//! settled result without the event loop (as `deno serve` dispatches).

use super::*;

/// What calling a handler gave.
pub(super) enum Called {
    /// Its result, settled already.
    Settled(v8::Global<v8::Value>),
    /// A promise the event loop must settle.
    Pending(v8::Global<v8::Value>),
}

/// Calls `function` with the arguments `args` makes, then runs the
/// microtasks once: a handler that awaits nothing (most do not) has settled
/// by then, and its result is read without running the event loop, as
/// `deno serve` dispatches a request.
pub(super) fn call_handler<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    function: &v8::Global<v8::Function>,
    args: impl FnOnce(&mut v8::PinScope<'s, '_>) -> Result<Vec<v8::Local<'s, v8::Value>>, FunctionError>,
) -> Result<Called, FunctionError> {
    let args = args(scope)?;
    v8::tc_scope!(let scope, scope);
    let function = v8::Local::new(scope, function);
    let undefined = v8::undefined(scope).into();
    let Some(returned) = function.call(scope, undefined, &args) else {
        let exception = scope
            .exception()
            .unwrap_or_else(|| v8::undefined(scope).into());
        return Err(thrown(scope, exception, false));
    };
    scope.perform_microtask_checkpoint();
    if scope.is_execution_terminating() || scope.has_terminated() {
        let undefined = v8::undefined(scope).into();
        return Err(thrown(scope, undefined, false));
    }
    let Ok(promise) = v8::Local::<v8::Promise>::try_from(returned) else {
        return Ok(Called::Settled(v8::Global::new(scope, returned)));
    };
    match promise.state() {
        v8::PromiseState::Fulfilled => {
            let value = promise.result(scope);
            Ok(Called::Settled(v8::Global::new(scope, value)))
        }
        v8::PromiseState::Rejected => {
            promise.mark_as_handled();
            let reason = promise.result(scope);
            Err(thrown(scope, reason, true))
        }
        v8::PromiseState::Pending => Ok(Called::Pending(v8::Global::new(scope, returned))),
    }
}

/// The value a call settled to: at once, or once the event loop has
/// settled its promise (by `deadline`, else a wall timeout).
pub(super) async fn settled(
    runtime: &mut JsRuntime,
    called: Called,
    deadline: Instant,
    source: &FunctionSource,
) -> Result<v8::Global<v8::Value>, FunctionError> {
    let promise = match called {
        Called::Settled(value) => return Ok(value),
        Called::Pending(promise) => promise,
    };
    let settled = runtime.resolve(promise);
    let driven = runtime.with_event_loop_promise(settled, PollEventLoopOptions::default());
    tokio::time::timeout_at(deadline, driven)
        .await
        .map_err(|_| wall_timeout(source))?
        .map_err(|e| errors::from_core_error(e, Phase::Invoke))
}

/// The error for an exception thrown by a handler (or its rejection).
fn thrown<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    exception: v8::Local<'s, v8::Value>,
    in_promise: bool,
) -> FunctionError {
    let error = deno_core::exception_to_err(scope, exception, in_promise, true);
    errors::from_js_error(&error, Phase::Invoke)
}
