//! The [`Dispatch`] invoker: one [`Invoker`] in front of the runtimes,
//! sending each function to the one its [`RuntimeKind`] names. Callers
//! (`isola serve`, `isola dev`, `isola invoke`) hold only this.

use crate::{
    BoxFuture, ErrorCode, FunctionError, FunctionSource, Invocation, Invoker, InvokerStats,
    Outcome, RuntimeKind,
};
use std::sync::Arc;

/// Runs JavaScript functions on `js` and WebAssembly ones on `wasm`.
pub struct Dispatch {
    js: Arc<dyn Invoker>,
    wasm: Option<Arc<dyn Invoker>>,
}

impl Dispatch {
    /// A dispatcher over the JavaScript runtime and, if the node has one,
    /// the WebAssembly runtime.
    pub fn new(js: Arc<dyn Invoker>, wasm: Option<Arc<dyn Invoker>>) -> Self {
        Self { js, wasm }
    }

    fn runtime(&self, kind: RuntimeKind) -> Result<&Arc<dyn Invoker>, FunctionError> {
        match kind {
            RuntimeKind::Js => Ok(&self.js),
            RuntimeKind::WasmModule | RuntimeKind::WasmComponent => {
                self.wasm.as_ref().ok_or_else(|| {
                    FunctionError::new(
                        ErrorCode::InvalidFunction,
                        "this node does not run WebAssembly functions",
                    )
                })
            }
        }
    }
}

impl Invoker for Dispatch {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        match self.runtime(invocation.function.runtime) {
            Ok(runtime) => runtime.invoke(invocation),
            Err(error) => Box::pin(async move { Outcome::failed(error) }),
        }
    }

    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        match self.runtime(function.runtime) {
            Ok(runtime) => runtime.prepare(function),
            Err(error) => Box::pin(async move { Err(error) }),
        }
    }

    fn evict(&self, function_id: &str) {
        self.js.evict(function_id);
        if let Some(wasm) = &self.wasm {
            wasm.evict(function_id);
        }
    }

    fn stats(&self) -> InvokerStats {
        let js = self.js.stats();
        let wasm = self.wasm.as_ref().map(|w| w.stats()).unwrap_or_default();
        InvokerStats {
            warm_instances: js.warm_instances + wasm.warm_instances,
            warm_memory_bytes: js.warm_memory_bytes + wasm.warm_memory_bytes,
            cold_starts: js.cold_starts + wasm.cold_starts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InvocationInput, InvocationOutput};

    /// Answers every invocation with its own name.
    struct Named(&'static str);

    impl Invoker for Named {
        fn invoke(&self, _: Invocation) -> BoxFuture<'_, Outcome> {
            let name = self.0;
            Box::pin(async move {
                Outcome {
                    result: Ok(InvocationOutput::Json(name.into())),
                    logs: Vec::new(),
                    metrics: Default::default(),
                }
            })
        }

        fn prepare(&self, _: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
            Box::pin(async { Ok(()) })
        }

        fn evict(&self, _: &str) {}
    }

    fn invocation(runtime: RuntimeKind) -> Invocation {
        let mut source = FunctionSource::single_module("id", "f", "");
        source.runtime = runtime;
        Invocation {
            id: "i".into(),
            function: Arc::new(source),
            input: InvocationInput::Json(serde_json::Value::Null),
        }
    }

    #[tokio::test]
    async fn each_function_goes_to_its_runtime() {
        let both = Dispatch::new(Arc::new(Named("js")), Some(Arc::new(Named("wasm"))));
        let answer = |outcome: Outcome| match outcome.result {
            Ok(InvocationOutput::Json(value)) => value,
            other => panic!("{other:?}"),
        };
        assert_eq!(answer(both.invoke(invocation(RuntimeKind::Js)).await), "js");
        assert_eq!(
            answer(both.invoke(invocation(RuntimeKind::WasmModule)).await),
            "wasm"
        );
        let js_only = Dispatch::new(Arc::new(Named("js")), None);
        let refused = js_only.invoke(invocation(RuntimeKind::WasmComponent)).await;
        assert_eq!(refused.result.unwrap_err().code, ErrorCode::InvalidFunction);
    }
}
