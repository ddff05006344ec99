//! One function's isolate: created from the snapshot with the function's
//! module loaded, then reused for invocations under the function's limits.
//!
//! Several isolates share each worker thread, and rusty_v8 enters an isolate
//! when it is created and expects it to be the current one when dropped. So
//! an isolate is exited right after creation and entered around every use
//! (each poll of its event loop, each synchronous call into it) and before
//! its drop; uses never nest. Every use is also one CPU slice of the current
//! invocation's [`CpuMeter`].

mod call;
mod convert;
mod setup;
mod socket;
mod upkeep;

use call::call_handler;
use convert::*;
use setup::*;

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
    socket_event: v8::Global<v8::Function>,
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
    /// Native memory held right after the last collection `trim` made.
    trimmed_to: usize,
    /// CPU time the module's evaluation took when the isolate was created.
    startup_cpu: Duration,
    /// KV operations left to the current invocation, if the function has KV.
    kv_budget: Option<Arc<isola_kv::Budget>>,
    /// Where a `101` response links its socket, when this isolate holds
    /// its function's WebSocket connections.
    socket_events: Option<tokio::sync::mpsc::Sender<isola_core::websocket::SocketEvent>>,
    /// CPU the background turn under way has used so far.
    background_cpu: Duration,
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
            // A limit can fire as the module's last slice ends: the
            // module loaded, but the isolate is not fit to run it.
            Ok(Ok(())) if isolate.meter.wall_exceeded() => Err(module_timeout(&source)),
            Ok(Ok(())) if !isolate.is_reusable() => Err(isolate.classify(FunctionError::new(
                ErrorCode::Internal,
                "the isolate broke down while its module loaded",
            ))),
            Ok(Ok(())) => {
                isolate.startup_cpu = isolate.meter.used();
                Ok(isolate)
            }
            Ok(Err(_)) if isolate.meter.wall_exceeded() => Err(module_timeout(&source)),
            Ok(Err(error)) => {
                isolate.measure_memory();
                Err(isolate.classify(error))
            }
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
            let socket_limits = crate::websocket::SocketLimits::of(limits);
            state.put(crate::websocket::Sockets::new(socket_limits));
            state.put(crate::websocket::client::Clients::new(
                permissions::net_rules(&allowed),
                socket_limits,
            ));
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
            trimmed_to: 0,
            startup_cpu: Duration::ZERO,
            kv_budget,
            socket_events: None,
            background_cpu: Duration::ZERO,
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
    ///
    /// An HTTP request to a JSON handler is a JSON invocation: a POST's
    /// body is the payload and the result goes back as JSON; other methods
    /// get 405, and a body that is not JSON 400, before any code runs.
    pub async fn invoke(
        &mut self,
        invocation: &Invocation,
        deadline: Instant,
    ) -> Result<InvocationOutput, FunctionError> {
        let InvocationInput::Http(request) = &invocation.input else {
            return self.run(invocation, deadline).await;
        };
        if !self.is_json_handler() {
            return self.run(invocation, deadline).await;
        }
        // The host's own answers (405, 400, 413) cost the function nothing.
        self.meter.reset(self.source.limits.cpu());
        if request.method != "POST" {
            let mut answer = convert::plain_http(
                405,
                "this function takes a JSON body by POST and answers JSON",
            );
            answer.headers.push(("allow".into(), "POST".into()));
            return Ok(InvocationOutput::Http(answer));
        }
        let limit = self
            .source
            .limits
            .memory_bytes()
            .min(convert::MAX_JSON_OVER_HTTP);
        let read = convert::json_body(request, limit);
        let payload = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(payload)) => payload,
            Ok(Err(answer)) => return Ok(InvocationOutput::Http(answer)),
            // The client sent its body too slowly: not the function's doing.
            Err(_) => {
                return Ok(InvocationOutput::Http(convert::plain_http(
                    408,
                    "the JSON body did not arrive in time",
                )))
            }
        };
        let as_json = Invocation {
            id: invocation.id.clone(),
            function: invocation.function.clone(),
            input: InvocationInput::Json(payload),
        };
        Ok(match self.run(&as_json, deadline).await? {
            InvocationOutput::Json(value) => InvocationOutput::Http(convert::json_http(&value)),
            other => other,
        })
    }

    async fn run(
        &mut self,
        invocation: &Invocation,
        deadline: Instant,
    ) -> Result<InvocationOutput, FunctionError> {
        self.reset_for(deadline);
        let result = match self.run_handler(invocation, deadline).await {
            Ok((output, tick)) => {
                self.settle(tick);
                Ok(output)
            }
            Err(error) => {
                self.broken = true;
                // Measured first: a memory error says what was held.
                self.measure_memory();
                if self.meter.wall_exceeded() {
                    Err(wall_timeout(&self.source))
                } else {
                    Err(self.classify(error))
                }
            }
        };
        self.charge_offloaded();
        if result.is_ok() && self.meter.exceeded() {
            // Work charged after the last slice (a WebCrypto call finishing)
            // took the invocation past its CPU limit.
            self.broken = true;
            return Err(self.classify(FunctionError::new(ErrorCode::CpuLimit, "")));
        }
        result
    }

    /// Calls the handler, drives the event loop until its result settles,
    /// decodes it and runs one more event-loop tick: all inside one metered
    /// future, so that a handler that finishes without awaiting I/O costs a
    /// single CPU slice.
    /// Past `deadline`, the watchdog ends JavaScript that runs, and a
    /// handler that awaits is given up.
    async fn run_handler(
        &mut self,
        invocation: &Invocation,
        deadline: Instant,
    ) -> Result<(InvocationOutput, upkeep::Tick), FunctionError> {
        let Self {
            runtime,
            raw,
            meter,
            host,
            handler,
            env,
            kind,
            source,
            socket_events,
            ..
        } = self;
        let handler = handler.as_ref().expect("a created isolate has a handler");
        let kind = *kind;
        let function = match kind {
            HandlerKind::Json => &host.invoke_json,
            HandlerKind::Fetch => &host.invoke_fetch,
        };
        let run = async move {
            let called = {
                deno_core::scope!(scope, runtime);
                let info = [invocation.id.as_str(), source.name.as_str()];
                call_handler(scope, function, |scope| match (kind, &invocation.input) {
                    (HandlerKind::Json, InvocationInput::Json(payload)) => {
                        json_args(scope, handler, payload, info, env)
                    }
                    (HandlerKind::Fetch, InvocationInput::Http(request)) => {
                        fetch_args(scope, handler, request, info, env)
                    }
                    (HandlerKind::Fetch, InvocationInput::Json(payload)) => {
                        fetch_args(scope, handler, &json_as_request(payload), info, env)
                    }
                    (HandlerKind::Json, InvocationInput::Http(_)) => Err(json_handler_needs_json()),
                })?
            };
            let value = call::settled(runtime, called, deadline, source).await?;
            let decoded = {
                deno_core::scope!(scope, runtime);
                let value = v8::Local::new(scope, value);
                match kind {
                    HandlerKind::Json => decode_json(scope, value, source.limits.memory_bytes())
                        .map(|output| (output, false, None)),
                    HandlerKind::Fetch => decode_response(scope, value),
                }
            };
            // A streamed body: the bootstrap opened a sink and pumps the
            // body into it after the head.
            let output = match decoded? {
                (InvocationOutput::Http(mut response), streaming, socket) => {
                    if streaming {
                        response.rest = take_opened_sink(runtime);
                    }
                    if let Some(id) = socket {
                        response.upgrade = Self::link_socket(runtime, socket_events, id)?;
                    }
                    InvocationOutput::Http(response)
                }
                (other, _, _) => other,
            };
            Ok((output, upkeep::tick(runtime)))
        };
        Metered {
            raw: *raw,
            meter,
            inner: Box::pin(run),
        }
        .await
    }

    /// Maps a failure to the limit it broke, if any.
    fn classify(&self, error: FunctionError) -> FunctionError {
        let limits = &self.source.limits;
        const MIB: f64 = (1 << 20) as f64;
        if self.heap_exceeded.load(Ordering::SeqCst)
            || self.budget.was_refused()
            || self.guard.exceeded()
        {
            FunctionError::new(
                ErrorCode::MemoryLimit,
                format!(
                    "the function exceeded its memory limit of {} MiB (it held {:.1} MiB when it was stopped)",
                    limits.memory_mb,
                    self.memory_in_use as f64 / MIB
                ),
            )
        } else if self.meter.exceeded() {
            FunctionError::new(
                ErrorCode::CpuLimit,
                format!(
                    "the function exceeded its CPU time limit of {} ms (it used {:.1} ms)",
                    limits.cpu_ms,
                    self.meter.used().as_secs_f64() * 1000.0
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

fn console_level(level: u8) -> LogLevel {
    match level {
        0 => LogLevel::Debug,
        1 => LogLevel::Info,
        2 => LogLevel::Warn,
        3 => LogLevel::Error,
        _ => LogLevel::Debug,
    }
}
