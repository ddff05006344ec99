//! Preparing a new isolate: its KV binding, the bootstrap's host object and
//! the function's `env`, and finding the module's handler.

use super::*;

/// Gives the isolate its function's KV namespace, when it has a binding and
/// the node has a KV store; returns the per-invocation operation budget.
pub(super) fn bind_kv(
    runtime: &mut JsRuntime,
    source: &FunctionSource,
    thread: &ThreadContext,
) -> Option<Arc<isola_kv::Budget>> {
    source.kv_binding.as_ref()?;
    let store = thread.kv.clone()?;
    let budget = Arc::new(isola_kv::Budget::default());
    let host = kv::NamespacedKv::new(store, source.name.clone(), budget.clone());
    runtime
        .op_state()
        .borrow_mut()
        .put(KvAccess(Some(Rc::new(host))));
    Some(budget)
}

/// Runs the bootstrap's per-isolate `init` and returns the host entry points
/// and the function's frozen `env`.
pub(super) fn init_host(
    runtime: &mut JsRuntime,
    source: &FunctionSource,
) -> Result<(Host, v8::Global<v8::Value>), FunctionError> {
    let env =
        serde_json::to_string(&serde_json::to_string(&source.env).expect("strings serialise"))
            .expect("strings serialise");
    let binding = match &source.kv_binding {
        Some(name) => serde_json::to_string(name).expect("strings serialise"),
        None => "null".into(),
    };
    let init = format!(
        "(() => {{ const host = globalThis.__isolaHost; return [host, host.init({env}, {binding})]; }})()"
    );
    let pair = runtime
        .execute_script("ext:isola_runtime/init.js", init)
        .map_err(|e| internal("initialising an isolate", e))?;
    deno_core::scope!(scope, runtime);
    let pair = v8::Local::new(scope, pair);
    let pair = v8::Local::<v8::Array>::try_from(pair)
        .map_err(|e| internal("reading the host object", e))?;
    let host = array_item(scope, pair, 0)?;
    let env = array_item(scope, pair, 1)?;
    let host = v8::Local::<v8::Object>::try_from(host)
        .map_err(|e| internal("reading the host object", e))?;
    let function = |name: &str| -> Result<v8::Global<v8::Function>, FunctionError> {
        let key = v8::String::new(scope, name).expect("short names fit in a V8 string");
        let value = host
            .get(scope, key.into())
            .ok_or_else(|| internal("reading the host object", name))?;
        let function = v8::Local::<v8::Function>::try_from(value)
            .map_err(|e| internal("reading the host object", e))?;
        Ok(v8::Global::new(scope, function))
    };
    let host = Host {
        invoke_json: function("invokeJson")?,
        invoke_fetch: function("invokeFetch")?,
        socket_event: function("socketEvent")?,
    };
    Ok((host, v8::Global::new(scope, env)))
}

/// Reads the module's default export and decides which kind of handler it is.
pub(super) fn find_handler(
    runtime: &mut JsRuntime,
    namespace: &v8::Global<v8::Object>,
) -> Result<(v8::Global<v8::Value>, HandlerKind), FunctionError> {
    deno_core::scope!(scope, runtime);
    let namespace = v8::Local::new(scope, namespace);
    let key = v8::String::new(scope, "default").expect("fits");
    let handler = namespace
        .get(scope, key.into())
        .filter(|v| !v.is_undefined());
    let Some(handler) = handler else {
        return Err(FunctionError::new(
            ErrorCode::InvalidFunction,
            "the module has no default export: export a function (export default async (payload, ctx) => value) or an object with a fetch method (export default { fetch(request, env, ctx) { ... } })",
        ));
    };
    if handler.is_function() {
        return Ok((v8::Global::new(scope, handler), HandlerKind::Json));
    }
    if let Ok(object) = v8::Local::<v8::Object>::try_from(handler) {
        let key = v8::String::new(scope, "fetch").expect("fits");
        if object
            .get(scope, key.into())
            .is_some_and(|f| f.is_function())
        {
            return Ok((v8::Global::new(scope, handler), HandlerKind::Fetch));
        }
    }
    Err(FunctionError::new(
        ErrorCode::InvalidFunction,
        "the default export is neither a function nor an object with a fetch method",
    ))
}
