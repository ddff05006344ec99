//! One function's isolate: created from the snapshot with the function's
//! module loaded, then reused for invocations under the function's limits.
//!
//! Several isolates share each worker thread, and rusty_v8 enters an isolate
//! when it is created and expects it to be the current one when dropped. So
//! an isolate is exited right after creation and entered around every use
//! (each poll of its event loop, each synchronous call into it) and before
//! its drop; uses never nest. Every use is also one CPU slice of the current
//! invocation's [`CpuMeter`].

use crate::cpu::{CpuMeter, CpuSlot};
use crate::errors::{self, Phase};
use crate::extension::{self, BodySinks, ConsoleBuffer, KvAccess, RequestBodies};
use crate::kv;
use crate::loader::{self, CodeCache, FunctionLoader};
use crate::memory::{self, ArrayBufferBudget, LimitedBlobStore, MemoryGuard};
use crate::outbound::{FetchBudget, Offloaded};
use crate::typescript::TranspileCache;
use crate::{permissions, RESIDUAL_LAZY_JS, SNAPSHOT};
use deno_core::v8::{self, UnsafeRawIsolatePtr};
use deno_core::{JsRuntime, PollEventLoopOptions, RuntimeOptions};
use isola_core::{
    ErrorCode, FunctionError, FunctionSource, HttpRequest, HttpResponse, Invocation,
    InvocationInput, InvocationOutput, LogEntry, LogLevel,
};
use std::cell::Cell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// What every isolate of a worker thread shares.
pub struct ThreadContext {
    /// The thread's place in the CPU watchdog.
    pub cpu_slot: Arc<CpuSlot>,
    /// Compiled code of every module loaded so far, process-wide.
    pub code_cache: Arc<CodeCache>,
    /// TypeScript modules transpiled so far, process-wide.
    pub transpiled: Arc<TranspileCache>,
    /// Where functions with a KV binding keep their data.
    pub kv: Option<Arc<dyn isola_kv::KvStore>>,
    /// The CPU clocks of the thread's blocking pool.
    pub blocking: Arc<crate::cpu::BlockingClocks>,
}

/// CPU time a module may spend evaluating its top level.
const STARTUP_CPU: Duration = Duration::from_millis(1000);

/// The shape of a function's default export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandlerKind {
    /// `export default async (payload, ctx) => value`
    Json,
    /// `export default { fetch(request, env, ctx) }`
    Fetch,
}

/// The bootstrap's entry points for running handlers.
struct Host {
    invoke_json: v8::Global<v8::Function>,
    invoke_fetch: v8::Global<v8::Function>,
}

/// A live isolate holding one function, ready to be invoked.
pub struct FunctionIsolate {
    runtime: ManuallyDrop<JsRuntime>,
    raw: UnsafeRawIsolatePtr,
    host: Host,
    handler: Option<v8::Global<v8::Value>>,
    kind: HandlerKind,
    env: v8::Global<v8::Value>,
    console: ConsoleBuffer,
    budget: Arc<ArrayBufferBudget>,
    guard: Arc<MemoryGuard>,
    heap_exceeded: Arc<AtomicBool>,
    meter: CpuMeter,
    source: Arc<FunctionSource>,
    broken: bool,
    /// Whether the event loop had nothing left to do after the last invocation.
    idle: bool,
    memory_in_use: usize,
    /// Of that, buffers and other memory outside the V8 heap.
    native_in_use: usize,
    /// CPU time the module's evaluation took when the isolate was created.
    startup_cpu: Duration,
    /// KV operations left to the current invocation, if the function has KV.
    kv_budget: Option<Rc<Cell<u32>>>,
}

/// Runs `f` with the isolate behind `raw` entered, as one CPU slice.
fn entered<T>(raw: UnsafeRawIsolatePtr, meter: &mut CpuMeter, f: impl FnOnce() -> T) -> T {
    meter.slice(|| {
        // SAFETY: `raw` points to a live isolate owned by the caller's runtime.
        let isolate = unsafe { v8::Isolate::from_raw_isolate_ptr(raw) };
        unsafe { isolate.enter() };
        let out = f();
        unsafe { isolate.exit() };
        out
    })
}

/// A future polled with its isolate entered, each poll one CPU slice.
struct Metered<'a, T> {
    raw: UnsafeRawIsolatePtr,
    meter: &'a mut CpuMeter,
    inner: Pin<Box<dyn Future<Output = T> + 'a>>,
}

impl<T> Future for Metered<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        entered(this.raw, this.meter, || inner.as_mut().poll(cx))
    }
}

/// The error for an HTTP request to a JSON handler.
pub fn json_handler_needs_json() -> FunctionError {
    FunctionError::new(
        ErrorCode::InvalidInput,
        "this function is a JSON handler (export default async (payload, ctx) => value): invoke it with a JSON payload",
    )
}

fn wall_timeout(source: &FunctionSource) -> FunctionError {
    FunctionError::new(
        ErrorCode::WallTimeout,
        format!(
            "the function did not finish within its {} ms wall-clock limit",
            source.limits.timeout_ms
        ),
    )
}

fn module_timeout(source: &FunctionSource) -> FunctionError {
    FunctionError::new(
        ErrorCode::WallTimeout,
        format!(
            "module evaluation did not finish within {} ms",
            source.limits.timeout_ms
        ),
    )
}

fn internal(context: &str, error: impl std::fmt::Display) -> FunctionError {
    FunctionError::new(ErrorCode::Internal, format!("{context}: {error}"))
}

impl FunctionIsolate {
    /// Creates an isolate for `source` and evaluates its entry module.
    pub async fn create(
        source: Arc<FunctionSource>,
        thread: &ThreadContext,
        deadline: Instant,
    ) -> Result<Self, FunctionError> {
        let mut isolate = Self::boot(source.clone(), thread)?;
        isolate.meter.set_wall_deadline(Some(deadline.into_std()));
        match tokio::time::timeout_at(deadline, isolate.load_module()).await {
            Ok(Ok(())) => {
                isolate.startup_cpu = isolate.meter.used();
                Ok(isolate)
            }
            Ok(Err(_)) if isolate.meter.wall_exceeded() => Err(module_timeout(&source)),
            Ok(Err(error)) => Err(isolate.classify(error)),
            Err(_) => Err(module_timeout(&source)),
        }
    }

    /// Makes the runtime from the snapshot and prepares the host object.
    fn boot(source: Arc<FunctionSource>, thread: &ThreadContext) -> Result<Self, FunctionError> {
        let limit = source.limits.memory_bytes();
        let budget = ArrayBufferBudget::new(limit);
        let guard = MemoryGuard::new(limit);
        // No thread may block inside JavaScript: Atomics.wait throws, as in
        // Workers (a blocked thread cannot be stopped by its CPU limit).
        let params = v8::CreateParams::default()
            .allow_atomics_wait(false)
            .heap_limits(0, limit)
            .array_buffer_allocator(memory::allocator(&budget));
        let loader = FunctionLoader::new(
            source.clone(),
            thread.code_cache.clone(),
            thread.transpiled.clone(),
        );
        let allowed = permissions::resolve_allowed(&source.allowed_hosts)
            .map_err(|e| FunctionError::new(ErrorCode::InvalidInput, e))?;
        let mut runtime = JsRuntime::try_new(RuntimeOptions {
            extensions: extension::extensions(
                permissions::sandbox(&allowed),
                LimitedBlobStore::new(guard.clone()),
            ),
            startup_snapshot: Some(SNAPSHOT),
            residual_lazy_js_sources: RESIDUAL_LAZY_JS,
            module_loader: Some(Rc::new(loader)),
            create_params: Some(params),
            ..Default::default()
        })
        .map_err(|e| internal("creating an isolate", e))?;

        let handle = runtime.v8_isolate().thread_safe_handle();
        guard.bind(handle.clone());
        let heap_exceeded = Arc::new(AtomicBool::new(false));
        let flag = heap_exceeded.clone();
        let terminate = handle.clone();
        runtime.add_near_heap_limit_callback(move |current, _initial| {
            flag.store(true, Ordering::SeqCst);
            terminate.terminate_execution();
            memory::heap_headroom(current)
        });
        let console = runtime
            .op_state()
            .borrow()
            .borrow::<ConsoleBuffer>()
            .clone();
        let kv_budget = bind_kv(&mut runtime, &source, thread);
        // SAFETY: the runtime owns a live isolate; it was entered on creation.
        let raw = unsafe { runtime.v8_isolate().as_raw_isolate_ptr() };
        unsafe { runtime.v8_isolate().exit() };

        let mut meter = CpuMeter::new(
            thread.cpu_slot.clone(),
            handle,
            STARTUP_CPU.max(source.limits.cpu()),
        );
        meter.watch_memory(guard.clone());
        {
            let state = runtime.op_state();
            let mut state = state.borrow_mut();
            let limits = &source.limits;
            state.put(FetchBudget {
                max_subrequests: limits.max_subrequests,
                max_bytes: limits.max_subrequest_mb as u64 * 1024 * 1024,
                timeout: Duration::from_millis(limits.subrequest_timeout_ms as u64),
                ..FetchBudget::default()
            });
            let blocking = thread.blocking.clone();
            let pool: crate::outbound::PoolClock = Box::new(move || blocking.total());
            state.put(Offloaded::new(meter.offloaded(), Some(pool)));
            let native = guard.clone();
            state.put(extension::NativeMemory(Some(Box::new(move |delta| {
                if delta >= 0 {
                    native.charge(delta as usize);
                } else {
                    native.release(delta.unsigned_abs() as usize);
                }
            }))));
        }
        let booted = entered(raw, &mut meter, || init_host(&mut runtime, &source));
        let (host, env) = match booted {
            Ok(booted) => booted,
            Err(error) => {
                // SAFETY: as in `Drop`: enter before the runtime is dropped.
                unsafe { v8::Isolate::from_raw_isolate_ptr(raw).enter() };
                return Err(error);
            }
        };
        Ok(Self {
            runtime: ManuallyDrop::new(runtime),
            raw,
            host,
            handler: None,
            kind: HandlerKind::Json,
            env,
            console,
            budget,
            guard,
            heap_exceeded,
            meter,
            source,
            broken: false,
            idle: true,
            memory_in_use: 0,
            native_in_use: 0,
            startup_cpu: Duration::ZERO,
            kv_budget,
        })
    }

    /// Loads and evaluates the entry module and finds its handler.
    async fn load_module(&mut self) -> Result<(), FunctionError> {
        let url = loader::module_url(&self.source.entry)
            .map_err(|e| FunctionError::new(ErrorCode::LinkError, e))?;
        let Self {
            runtime,
            raw,
            meter,
            ..
        } = self;
        let module_id = Metered {
            raw: *raw,
            meter,
            inner: Box::pin(runtime.load_main_es_module(&url)),
        }
        .await
        .map_err(|e| errors::from_core_error(e, Phase::Load))?;
        let evaluation = entered(*raw, meter, || runtime.mod_evaluate(module_id));
        Metered {
            raw: *raw,
            meter,
            inner: Box::pin(
                runtime
                    .with_event_loop_promise(Box::pin(evaluation), PollEventLoopOptions::default()),
            ),
        }
        .await
        .map_err(|e| errors::from_core_error(e, Phase::Load))?;
        let (handler, kind) = entered(*raw, meter, || {
            let namespace = runtime
                .get_module_namespace(module_id)
                .map_err(|e| errors::from_core_error(e, Phase::Load))?;
            find_handler(runtime, &namespace)
        })?;
        self.handler = Some(handler);
        self.kind = kind;
        Ok(())
    }

    /// The function this isolate runs.
    pub fn source(&self) -> &Arc<FunctionSource> {
        &self.source
    }

    /// Memory the isolate held after its last invocation, in bytes.
    pub fn memory_in_use(&self) -> usize {
        self.memory_in_use
    }

    /// Whether the isolate may serve another invocation.
    pub fn is_reusable(&self) -> bool {
        !self.broken
            && !self.heap_exceeded.load(Ordering::SeqCst)
            && !self.meter.exceeded()
            && !self.meter.wall_exceeded()
            && !self.guard.exceeded()
    }

    /// CPU time charged to the current invocation so far.
    pub fn cpu_used(&self) -> Duration {
        self.meter.used()
    }

    /// Whether the function is a JSON handler (not a Workers-style one).
    pub fn is_json_handler(&self) -> bool {
        self.kind == HandlerKind::Json
    }

    /// CPU time spent evaluating the module when the isolate was created.
    pub fn startup_cpu(&self) -> Duration {
        self.startup_cpu
    }

    /// Runs one invocation. On any failure the isolate is marked broken and
    /// must be dropped.
    pub async fn invoke(
        &mut self,
        invocation: &Invocation,
        deadline: Instant,
    ) -> Result<InvocationOutput, FunctionError> {
        if self.is_json_handler() && matches!(invocation.input, InvocationInput::Http(_)) {
            // Refused before any code runs: the isolate stays as good as it was.
            return Err(json_handler_needs_json());
        }
        self.meter.reset(self.source.limits.cpu());
        self.meter.set_wall_deadline(Some(deadline.into_std()));
        self.budget.clear_refused();
        self.runtime
            .op_state()
            .borrow()
            .borrow::<FetchBudget>()
            .reset();
        if let Some(kv_budget) = &self.kv_budget {
            kv_budget.set(kv::MAX_OPS_PER_INVOCATION);
        }
        let result = match tokio::time::timeout_at(deadline, self.run_handler(invocation)).await {
            Ok(Err(_)) if self.meter.wall_exceeded() => Err(wall_timeout(&self.source)),
            Ok(result) => result.map_err(|e| self.classify(e)),
            Err(_) => Err(wall_timeout(&self.source)),
        };
        if result.is_err() {
            self.broken = true;
            self.measure_memory();
        } else {
            self.settle();
        }
        self.charge_offloaded();
        if result.is_ok() && self.meter.exceeded() {
            // Work charged after the last slice (a WebCrypto call finishing)
            // took the invocation past its CPU limit.
            self.broken = true;
            return Err(self.classify(FunctionError::new(ErrorCode::CpuLimit, "")));
        }
        result
    }

    /// Calls the handler, drives the event loop until its result settles and
    /// decodes it: all inside one metered future, so that a handler that
    /// finishes without awaiting I/O costs a single CPU slice.
    async fn run_handler(
        &mut self,
        invocation: &Invocation,
    ) -> Result<InvocationOutput, FunctionError> {
        let Self {
            runtime,
            raw,
            meter,
            host,
            handler,
            env,
            kind,
            source,
            ..
        } = self;
        let handler = handler.as_ref().expect("a created isolate has a handler");
        let kind = *kind;
        let function = match kind {
            HandlerKind::Json => host.invoke_json.clone(),
            HandlerKind::Fetch => host.invoke_fetch.clone(),
        };
        let run = async move {
            let sink = (kind == HandlerKind::Fetch).then(|| open_body_sink(runtime));
            let sink_id = sink.as_ref().map_or(0, |(id, _)| *id);
            let args = {
                deno_core::scope!(scope, runtime);
                let info = [invocation.id.as_str(), source.name.as_str()];
                match (kind, &invocation.input) {
                    (HandlerKind::Json, InvocationInput::Json(payload)) => {
                        json_args(scope, handler, payload, info, env)
                    }
                    (HandlerKind::Fetch, InvocationInput::Http(request)) => {
                        fetch_args(scope, handler, request, info, env, sink_id)
                    }
                    (HandlerKind::Fetch, InvocationInput::Json(payload)) => fetch_args(
                        scope,
                        handler,
                        &json_as_request(payload),
                        info,
                        env,
                        sink_id,
                    ),
                    (HandlerKind::Json, InvocationInput::Http(_)) => Err(json_handler_needs_json()),
                }?
            };
            let call = runtime.call_with_args(&function, &args);
            let value = runtime
                .with_event_loop_promise(call, PollEventLoopOptions::default())
                .await
                .map_err(|e| errors::from_core_error(e, Phase::Invoke))?;
            let decoded = {
                deno_core::scope!(scope, runtime);
                let value = v8::Local::new(scope, value);
                match kind {
                    HandlerKind::Json => decode_json(scope, value, source.limits.memory_bytes())
                        .map(|output| (output, false)),
                    HandlerKind::Fetch => decode_response(scope, value),
                }
            };
            let streaming = matches!(decoded, Ok((_, true)));
            match sink {
                // The bootstrap pumps the body into the sink after the head.
                Some((_, receiver)) if streaming => decoded.map(|(output, _)| match output {
                    InvocationOutput::Http(mut response) => {
                        response.rest = isola_core::BodyStream::new(receiver);
                        InvocationOutput::Http(response)
                    }
                    other => other,
                }),
                sink => {
                    if let Some((id, _)) = sink {
                        close_body_sink(runtime, id);
                    }
                    decoded.map(|(output, _)| output)
                }
            }
        };
        Metered {
            raw: *raw,
            meter,
            inner: Box::pin(run),
        }
        .await
    }

    /// Runs one more event-loop tick, so that rejections left unhandled by a
    /// successful invocation reach its log, and measures memory; all in one
    /// slice. Records whether the event loop is idle afterwards.
    fn settle(&mut self) {
        let Self {
            runtime,
            raw,
            meter,
            guard,
            ..
        } = self;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (polled, heap, external) = entered(*raw, meter, || {
            let polled = runtime.poll_event_loop(&mut cx, PollEventLoopOptions::default());
            let stats = runtime.v8_isolate().get_heap_statistics();
            (polled, stats.used_heap_size(), stats.external_memory())
        });
        self.native_in_use = external + guard.extra();
        self.memory_in_use = heap + self.native_in_use;
        if self.memory_in_use > self.source.limits.memory_bytes() * 2 {
            // Held past the invocation: not worth keeping warm.
            self.broken = true;
        }
        match polled {
            Poll::Ready(Ok(())) => self.idle = true,
            Poll::Ready(Err(_)) => self.broken = true,
            Poll::Pending => self.idle = false,
        }
    }

    /// Runs what the invocation left behind (`ctx.waitUntil` promises,
    /// timers) until the event loop is idle or `deadline` passes.
    pub async fn drain(&mut self, deadline: Instant) {
        if self.idle || !self.is_reusable() {
            return;
        }
        let Self {
            runtime,
            raw,
            meter,
            ..
        } = self;
        let mut polls = 0u32;
        let drained = Metered {
            raw: *raw,
            meter,
            inner: Box::pin(std::future::poll_fn(|cx| {
                polls += 1;
                runtime.poll_event_loop(cx, PollEventLoopOptions::default())
            })),
        };
        match tokio::time::timeout_at(deadline, drained).await {
            Ok(Ok(())) => {}
            _ => self.broken = true,
        }
        self.idle = true;
        if polls > 1 {
            // Work ran after the result: its memory counts for the pool.
            self.measure_memory();
        }
    }

    /// Charges work still running on other threads for this invocation
    /// (WebCrypto), so its CPU time is in the invocation's figures.
    fn charge_offloaded(&mut self) {
        let state = self.runtime.op_state();
        state
            .borrow_mut()
            .borrow_mut::<Offloaded>()
            .charge_running();
        let offloaded = self.meter.offloaded().take();
        self.meter.charge(offloaded);
    }

    /// Collects the isolate's garbage before it goes back to the pool, when
    /// it holds more than `above` bytes outside its heap: buffers an
    /// invocation dropped (a streamed upload's chunks) otherwise stay until
    /// V8 next feels heap pressure, held by an idle isolate.
    pub fn trim(&mut self, above: usize) {
        if self.native_in_use <= above {
            return;
        }
        let runtime = &mut self.runtime;
        entered(self.raw, &mut self.meter, || {
            runtime.v8_isolate().low_memory_notification()
        });
        self.measure_memory();
    }

    /// Drops the request bodies and response sinks the last invocation left
    /// open (a body the function never read, a stream it never finished), so
    /// that their connections end and their memory is freed with the
    /// invocation, whether or not the isolate is kept warm.
    pub fn release_bodies(&mut self) {
        let state = self.runtime.op_state();
        let mut state = state.borrow_mut();
        state.borrow_mut::<RequestBodies>().streams.clear();
        state.borrow_mut::<BodySinks>().senders.clear();
    }

    /// Console output captured since the last call.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        let mut buffer = self.console.0.borrow_mut();
        let dropped = std::mem::take(&mut buffer.dropped);
        buffer.bytes = 0;
        let mut logs: Vec<LogEntry> = buffer
            .lines
            .drain(..)
            .map(|(level, message)| LogEntry {
                level: console_level(level),
                message,
            })
            .collect();
        if dropped > 0 {
            logs.push(LogEntry {
                level: LogLevel::Warn,
                message: format!("{dropped} console lines dropped: output limit reached"),
            });
        }
        logs
    }

    fn measure_memory(&mut self) {
        let runtime = &mut self.runtime;
        let stats = entered(self.raw, &mut self.meter, || {
            runtime.v8_isolate().get_heap_statistics()
        });
        self.native_in_use = stats.external_memory() + self.guard.extra();
        self.memory_in_use = stats.used_heap_size() + self.native_in_use;
    }

    /// Maps a failure to the limit it broke, if any.
    fn classify(&self, error: FunctionError) -> FunctionError {
        let limits = &self.source.limits;
        if self.heap_exceeded.load(Ordering::SeqCst)
            || self.budget.was_refused()
            || self.guard.exceeded()
        {
            FunctionError::new(
                ErrorCode::MemoryLimit,
                format!(
                    "the function exceeded its memory limit of {} MiB",
                    limits.memory_mb
                ),
            )
        } else if self.meter.exceeded() {
            FunctionError::new(
                ErrorCode::CpuLimit,
                format!(
                    "the function exceeded its CPU time limit of {} ms",
                    limits.cpu_ms
                ),
            )
        } else {
            error
        }
    }
}

impl Drop for FunctionIsolate {
    fn drop(&mut self) {
        // SAFETY: the isolate must be the current one when dropped.
        unsafe { v8::Isolate::from_raw_isolate_ptr(self.raw).enter() };
        // SAFETY: dropped exactly once, here.
        unsafe { ManuallyDrop::drop(&mut self.runtime) };
    }
}

/// Gives the isolate its function's KV namespace, when it has a binding and
/// the node has a KV store; returns the per-invocation operation budget.
fn bind_kv(
    runtime: &mut JsRuntime,
    source: &FunctionSource,
    thread: &ThreadContext,
) -> Option<Rc<Cell<u32>>> {
    source.kv_binding.as_ref()?;
    let store = thread.kv.clone()?;
    let budget = Rc::new(Cell::new(kv::MAX_OPS_PER_INVOCATION));
    let host = kv::NamespacedKv::new(store, source.name.clone(), budget.clone());
    runtime
        .op_state()
        .borrow_mut()
        .put(KvAccess(Some(Rc::new(host))));
    Some(budget)
}

/// Runs the bootstrap's per-isolate `init` and returns the host entry points
/// and the function's frozen `env`.
fn init_host(
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
    };
    Ok((host, v8::Global::new(scope, env)))
}

/// Reads the module's default export and decides which kind of handler it is.
fn find_handler(
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

type Args = Vec<v8::Global<v8::Value>>;

fn global_of(scope: &mut v8::PinScope, value: v8::Local<v8::Value>) -> v8::Global<v8::Value> {
    v8::Global::new(scope, value)
}

fn string_arg(
    scope: &mut v8::PinScope,
    text: &str,
) -> Result<v8::Global<v8::Value>, FunctionError> {
    let string = v8::String::new(scope, text).ok_or_else(|| {
        FunctionError::new(
            ErrorCode::InvalidInput,
            "input too large for a JavaScript string",
        )
    })?;
    Ok(global_of(scope, string.into()))
}

fn serde_arg(
    scope: &mut v8::PinScope,
    value: &impl serde::Serialize,
) -> Result<v8::Global<v8::Value>, FunctionError> {
    let local = deno_core::serde_v8::to_v8(scope, value)
        .map_err(|e| FunctionError::new(ErrorCode::InvalidInput, e.to_string()))?;
    Ok(global_of(scope, local))
}

fn json_args(
    scope: &mut v8::PinScope,
    handler: &v8::Global<v8::Value>,
    payload: &serde_json::Value,
    [invocation_id, function_name]: [&str; 2],
    env: &v8::Global<v8::Value>,
) -> Result<Args, FunctionError> {
    let text = serde_json::to_string(payload)
        .map_err(|e| FunctionError::new(ErrorCode::InvalidInput, e.to_string()))?;
    Ok(vec![
        handler.clone(),
        string_arg(scope, &text)?,
        string_arg(scope, invocation_id)?,
        string_arg(scope, function_name)?,
        env.clone(),
    ])
}

fn fetch_args(
    scope: &mut v8::PinScope,
    handler: &v8::Global<v8::Value>,
    request: &HttpRequest,
    [invocation_id, function_name]: [&str; 2],
    env: &v8::Global<v8::Value>,
    sink_id: u32,
) -> Result<Args, FunctionError> {
    let bodiless = matches!(request.method.as_str(), "GET" | "HEAD");
    let body: v8::Local<v8::Value> = if bodiless {
        // Never readable by the function: dropped now, which ends its upload.
        drop(request.rest.take());
        v8::null(scope).into()
    } else if let Some(receiver) = request.rest.take() {
        // A streamed body: the bootstrap pulls it with op_isola_body_recv.
        let id = open_request_body(scope, request.body.clone(), receiver);
        v8::Integer::new_from_unsigned(scope, id).into()
    } else if request.body.is_empty() {
        v8::null(scope).into()
    } else {
        let store = v8::ArrayBuffer::new_backing_store_from_vec(request.body.clone()).make_shared();
        let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
        v8::Uint8Array::new(scope, buffer, 0, request.body.len())
            .ok_or_else(|| FunctionError::new(ErrorCode::InvalidInput, "request body too large"))?
            .into()
    };
    let body = global_of(scope, body);
    Ok(vec![
        handler.clone(),
        string_arg(scope, &request.method)?,
        string_arg(scope, &request.url)?,
        serde_arg(scope, &request.headers)?,
        body,
        string_arg(scope, invocation_id)?,
        string_arg(scope, function_name)?,
        env.clone(),
        global_of(scope, v8::Integer::new_from_unsigned(scope, sink_id).into()),
    ])
}

/// A JSON payload given to a Workers-style function: a POST with a JSON body.
fn json_as_request(payload: &serde_json::Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url: "http://localhost/".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(payload).unwrap_or_default(),
        rest: Default::default(),
    }
}

fn array_item<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    array: v8::Local<'s, v8::Array>,
    index: u32,
) -> Result<v8::Local<'s, v8::Value>, FunctionError> {
    array
        .get_index(scope, index)
        .ok_or_else(|| internal("reading a handler result", index))
}

/// What parsing a JSON text into a `serde_json::Value` may take at most:
/// every value (one per `[`, `{`, `,` or `:` at most) costs a node of its
/// own, besides the text. A result small as text can be huge as values
/// (`[[],[],...]`), so this is checked before parsing.
fn json_value_bytes(text: &str) -> usize {
    let nodes = text
        .bytes()
        .filter(|b| matches!(b, b'[' | b'{' | b',' | b':'))
        .count();
    text.len() + (nodes + 1) * 80
}

fn decode_json<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
    limit: usize,
) -> Result<InvocationOutput, FunctionError> {
    let array = v8::Local::<v8::Array>::try_from(value)
        .map_err(|e| internal("reading a JSON result", e))?;
    let text = array_item(scope, array, 0)?;
    if text.is_undefined() {
        let reason = array_item(scope, array, 2)?.to_rust_string_lossy(scope);
        return Err(FunctionError::new(
            ErrorCode::InvalidOutput,
            format!("the function's result cannot be serialised as JSON: {reason}"),
        ));
    }
    let text = text.to_rust_string_lossy(scope);
    if json_value_bytes(&text) > limit {
        return Err(FunctionError::new(
            ErrorCode::InvalidOutput,
            format!(
                "the function's result is too large: its JSON ({} bytes) would take more than the function's memory limit to hold",
                text.len()
            ),
        ));
    }
    let json = serde_json::from_str(&text).map_err(|e| {
        FunctionError::new(
            ErrorCode::InvalidOutput,
            format!("the function's result is not valid JSON: {e}"),
        )
    })?;
    Ok(InvocationOutput::Json(json))
}

/// The response head and whole body, and whether more of the body streams.
fn decode_response<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
) -> Result<(InvocationOutput, bool), FunctionError> {
    let array =
        v8::Local::<v8::Array>::try_from(value).map_err(|e| internal("reading a response", e))?;
    let status = array_item(scope, array, 0)?
        .uint32_value(scope)
        .unwrap_or(500) as u16;
    let headers = array_item(scope, array, 1)?;
    let headers: Vec<(String, String)> = deno_core::serde_v8::from_v8(scope, headers)
        .map_err(|e| internal("reading response headers", e))?;
    let body = array_item(scope, array, 2)?;
    let body = v8::Local::<v8::Uint8Array>::try_from(body)
        .map_err(|e| internal("reading a response body", e))?;
    let mut bytes = vec![0; body.byte_length()];
    body.copy_contents(&mut bytes);
    let streaming = array_item(scope, array, 3)?.is_true();
    let response = HttpResponse {
        status,
        headers,
        body: bytes,
        rest: isola_core::BodyStream::default(),
    };
    Ok((InvocationOutput::Http(response), streaming))
}

/// Opens a channel for a streamed response body; returns its id and receiver.
fn open_body_sink(
    runtime: &mut JsRuntime,
) -> (u32, tokio::sync::mpsc::Receiver<isola_core::BodyChunk>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let state = runtime.op_state();
    let mut state = state.borrow_mut();
    let sinks = state.borrow_mut::<BodySinks>();
    let id = sinks.next;
    sinks.next = sinks.next.wrapping_add(1);
    sinks.senders.insert(id, sender);
    (id, receiver)
}

/// Registers a streamed request body (its first bytes and the rest);
/// returns the id the bootstrap pulls it by.
fn open_request_body(
    scope: &mut v8::PinScope,
    first: Vec<u8>,
    rest: tokio::sync::mpsc::Receiver<isola_core::BodyChunk>,
) -> u32 {
    let state = JsRuntime::op_state_from(scope);
    let mut state = state.borrow_mut();
    let bodies = state.borrow_mut::<RequestBodies>();
    let id = bodies.next;
    bodies.next = bodies.next.wrapping_add(1);
    let first = (!first.is_empty()).then_some(first);
    bodies.streams.insert(id, (first, rest));
    id
}

/// Drops an unused body channel.
fn close_body_sink(runtime: &mut JsRuntime, id: u32) {
    runtime
        .op_state()
        .borrow_mut()
        .borrow_mut::<BodySinks>()
        .senders
        .remove(&id);
}

fn console_level(level: u8) -> LogLevel {
    match level {
        0 => LogLevel::Debug,
        1 => LogLevel::Info,
        2 => LogLevel::Warn,
        3 => LogLevel::Error,
        _ => LogLevel::Debug,
    }
}
