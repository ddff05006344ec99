//! Running a WASI preview 1 command: its input on stdin, its result from
//! stdout, its logs from stderr, under the function's CPU and memory
//! limits; failures mapped to the error codes JavaScript functions use.

use crate::engine::WasmEngine;
use crate::meter::{Deadlines, Meter, Stopped};
use isola_core::{
    ErrorCode, FunctionError, FunctionSource, HttpResponse, InvocationInput, InvocationMetrics,
    InvocationOutput, LogEntry, LogLevel, Outcome,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{InstancePre, Linker, Module, ResourceLimiter, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// Most bytes a command may write to stdout (the rest is refused: the
/// command sees an I/O error) and to stderr.
const MAX_STDOUT: usize = 16 << 20;
const MAX_STDERR: usize = 1 << 20;

/// Most random bytes one call may ask for.
const MAX_RANDOM: u64 = 64 << 10;

/// What a table element costs, counted in the function's memory.
const TABLE_ELEMENT_BYTES: usize = 16;

use crate::engine::MAX_TABLE_ELEMENTS;

/// Largest input a command is given on stdin.
const MAX_STDIN: usize = 32 << 20;

/// What a store holds: WASI's context and the memory limiter.
pub struct State {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

/// A store's state that keeps a [`Limiter`].
pub(crate) trait Limited: Send + 'static {
    /// The limiter.
    fn limiter(&mut self) -> &mut Limiter;
}

impl Limited for State {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

impl Limited for crate::component::State {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

/// A store for one run of `function`: its memory kept by the state's
/// limiter, its CPU and wall time checked at every epoch tick (see
/// [`crate::meter`]).
pub(crate) fn new_store<T: Limited>(
    engine: &WasmEngine,
    function: &FunctionSource,
    state: T,
    capture: &Capture,
) -> Store<T> {
    let mut store = Store::new(&engine.engine, state);
    store.limiter(|state| state.limiter() as &mut dyn ResourceLimiter);
    let deadlines = Deadlines {
        meter: capture.meter.clone(),
        cpu: function.limits.cpu(),
        wall: capture.started + function.limits.timeout(),
    };
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| deadlines.check());
    store
}

/// A WASI context for one run of `function`: `stdin` in, stdout and
/// stderr captured (capped), its name as the only argument, its variables
/// and secrets as the environment; nothing else.
pub(crate) fn wasi_for(
    function: &FunctionSource,
    stdin: Vec<u8>,
    meter: Arc<Meter>,
) -> (WasiCtxBuilder, Capture) {
    let capture = Capture {
        stdout: MemoryOutputPipe::new(MAX_STDOUT),
        stderr: MemoryOutputPipe::new(MAX_STDERR),
        started: Instant::now(),
        meter,
    };
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(MemoryInputPipe::new(stdin))
        .stdout(capture.stdout.clone())
        .stderr(capture.stderr.clone())
        // One host call the epoch cannot interrupt: keep it short.
        .max_random_size(MAX_RANDOM)
        .args(&[function.name.as_str()]);
    for (name, value) in &function.env {
        wasi.env(name, value);
    }
    (wasi, capture)
}

/// What one run writes and costs, turned into its outcome at the end.
pub(crate) struct Capture {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    started: Instant,
    meter: Arc<Meter>,
}

impl Capture {
    /// The outcome of a run that ended with `ran` (its exit code, or what
    /// stopped it), its memory counted in `usage`.
    pub(crate) fn finish(
        self,
        ran: wasmtime::Result<i32>,
        function: &FunctionSource,
        input: &InvocationInput,
        usage: &Usage,
    ) -> Outcome {
        let result = match ran {
            Ok(0) => Ok(output(input, self.stdout.contents().to_vec())),
            Ok(code) => Err(FunctionError::new(
                ErrorCode::UncaughtException,
                format!("the command exited with code {code}"),
            )),
            Err(error) => Err(self.failure(&error, function, usage)),
        };
        self.outcome(result, log_lines(&self.stderr.contents()), usage)
    }

    /// An outcome with what the run cost so far.
    pub(crate) fn outcome(
        &self,
        result: Result<InvocationOutput, FunctionError>,
        logs: Vec<LogEntry>,
        usage: &Usage,
    ) -> Outcome {
        Outcome {
            result,
            logs,
            metrics: InvocationMetrics {
                cold_start: false,
                duration_us: self.started.elapsed().as_micros() as u64,
                cpu_us: self.meter.used().as_micros() as u64,
                peak_heap_bytes: usage.memory() as u64,
            },
        }
    }

    /// The error for a run that trapped or failed with `error`.
    pub(crate) fn failure(
        &self,
        error: &wasmtime::Error,
        function: &FunctionSource,
        usage: &Usage,
    ) -> FunctionError {
        classify(error, usage.refused(), function, self.meter.used())
    }

    /// What the run wrote to stdout and stderr, as log lines (for a
    /// component whose result is not its stdout).
    pub(crate) fn output_logs(&self) -> Vec<LogEntry> {
        let mut logs = log_lines(&self.stdout.contents());
        for line in &mut logs {
            if line.level == LogLevel::Error {
                line.level = LogLevel::Info;
            }
        }
        let room = MAX_LOG_LINES.saturating_sub(logs.len());
        logs.extend(log_lines(&self.stderr.contents()).into_iter().take(room));
        logs
    }
}

/// The exit code a failed run asked for (`proc_exit`), or its failure.
pub(crate) fn exit_code(error: wasmtime::Error) -> wasmtime::Result<i32> {
    match error.downcast_ref::<I32Exit>() {
        Some(I32Exit(code)) => Ok(*code),
        None => Err(error),
    }
}

/// Keeps linear memories and tables within the function's memory limit;
/// remembers a refusal, which makes the trap a `memory_limit`.
pub(crate) struct Limiter {
    max_memory: usize,
    usage: Arc<Usage>,
}

/// What a run's memories and tables hold, readable while the store is
/// busy.
#[derive(Default)]
pub(crate) struct Usage {
    memory: AtomicUsize,
    refused: AtomicBool,
}

impl Usage {
    /// Bytes of linear memory and tables.
    pub(crate) fn memory(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    /// Whether a growth was refused.
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Limiter {
    /// A limiter for `function`'s memory limit.
    pub(crate) fn of(function: &FunctionSource) -> Self {
        Self {
            max_memory: function.limits.memory_bytes(),
            usage: Arc::default(),
        }
    }

    /// What it counts, to read while the store is busy.
    pub(crate) fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }

    /// Grows the count by `bytes`, or refuses past the limit.
    fn grow(&mut self, bytes: usize, what: &str) -> wasmtime::Result<bool> {
        let grown = self.usage.memory().saturating_add(bytes);
        if grown > self.max_memory {
            self.usage.refused.store(true, Ordering::Relaxed);
            return Err(wasmtime::Error::msg(format!("{what} limit reached")));
        }
        self.usage.memory.store(grown, Ordering::Relaxed);
        Ok(true)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired - current, "memory")
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.usage.refused.store(true, Ordering::Relaxed);
            return Err(wasmtime::Error::msg("table limit reached"));
        }
        // Table elements are memory too (a reference each).
        self.grow((desired - current) * TABLE_ELEMENT_BYTES, "table")
    }
}

/// A module compiled and linked against WASI, ready to instantiate.
pub struct Prepared {
    pre: InstancePre<State>,
}

impl Prepared {
    /// Links a compiled module against WASI preview 1 (an import of
    /// anything else is refused now).
    pub fn link(engine: &WasmEngine, module: Module) -> Result<Self, FunctionError> {
        if module.get_export("_start").is_none() {
            return Err(FunctionError::new(
                ErrorCode::InvalidFunction,
                "the module exports no _start: build a WASI command (wasm32-wasi, with main)",
            ));
        }
        let mut linker: Linker<State> = Linker::new(&engine.engine);
        // Asynchronous: a sleep (`poll_oneoff`) waits without a thread, and
        // the wall-clock limit ends it.
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut State| &mut state.wasi)
            .map_err(|e| internal("linking WASI", e))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            FunctionError::new(
                ErrorCode::LinkError,
                format!("the module imports what isola does not provide: {e:#}"),
            )
        })?;
        Ok(Self { pre })
    }
}

pub(crate) fn internal(context: &str, error: impl std::fmt::Display) -> FunctionError {
    FunctionError::new(ErrorCode::Internal, format!("{context}: {error}"))
}

/// The command's stdin for an invocation: a JSON payload's text, or an
/// HTTP request's body.
pub async fn stdin_of(input: &InvocationInput) -> Result<Vec<u8>, FunctionError> {
    match input {
        InvocationInput::Json(payload) => Ok(serde_json::to_vec(payload).unwrap_or_default()),
        InvocationInput::Http(request) => request
            .read_body(MAX_STDIN)
            .await
            .map_err(|e| FunctionError::new(ErrorCode::InvalidInput, e)),
    }
}

/// Runs the command once, in a fresh instance.
pub async fn run(
    engine: &WasmEngine,
    prepared: &Prepared,
    function: &FunctionSource,
    stdin: Vec<u8>,
    input: &InvocationInput,
    meter: Arc<Meter>,
) -> Outcome {
    let (mut wasi, capture) = wasi_for(function, stdin, meter);
    let state = State {
        wasi: wasi.build_p1(),
        limiter: Limiter::of(function),
    };
    let mut store = new_store(engine, function, state, &capture);
    let ran = async {
        let instance = prepared.pre.instantiate_async(&mut store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call_async(&mut store, ()).await
    }
    .await
    .map(|()| 0)
    .or_else(exit_code);
    capture.finish(ran, function, input, &store.data().limiter.usage)
}

/// The error for a command that trapped or failed.
fn classify(
    error: &wasmtime::Error,
    refused: bool,
    function: &FunctionSource,
    cpu: Duration,
) -> FunctionError {
    let limits = &function.limits;
    if refused {
        return FunctionError::new(
            ErrorCode::MemoryLimit,
            format!(
                "the function exceeded its memory limit of {} MiB",
                limits.memory_mb
            ),
        );
    }
    if let Some(Stopped::Wall) = error.downcast_ref::<Stopped>() {
        return FunctionError::new(
            ErrorCode::WallTimeout,
            format!(
                "the function did not finish within its {} ms wall-clock limit",
                limits.timeout_ms
            ),
        );
    }
    let interrupted = matches!(
        error.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    );
    if interrupted || error.downcast_ref::<Stopped>().is_some() {
        return FunctionError::new(
            ErrorCode::CpuLimit,
            format!(
                "the function exceeded its CPU time limit of {} ms (it used {:.1} ms)",
                limits.cpu_ms,
                cpu.as_secs_f64() * 1000.0
            ),
        );
    }
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    FunctionError::new(ErrorCode::UncaughtException, message)
}

/// The result of a command that wrote `stdout`: JSON when it is JSON, else
/// text; over HTTP, the response body.
fn output(input: &InvocationInput, stdout: Vec<u8>) -> InvocationOutput {
    match input {
        InvocationInput::Json(_) => InvocationOutput::Json(
            serde_json::from_slice::<serde_json::Value>(&stdout).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&stdout).into_owned())
            }),
        ),
        InvocationInput::Http(_) => {
            // Only checked, never built: the body goes out as it is.
            let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&stdout).is_ok();
            let kind = if is_json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            InvocationOutput::Http(HttpResponse {
                status: 200,
                headers: vec![("content-type".into(), kind.into())],
                body: stdout,
                rest: Default::default(),
                upgrade: Default::default(),
            })
        }
    }
}

/// Each line of stderr as an `error`-level log line: at most
/// [`MAX_LOG_LINES`] lines and [`MAX_LOG_BYTES`] bytes, as for JavaScript.
fn log_lines(stderr: &[u8]) -> Vec<LogEntry> {
    let text = String::from_utf8_lossy(stderr);
    let mut logs = Vec::new();
    let mut bytes = 0;
    for line in text.lines() {
        if logs.len() == MAX_LOG_LINES || bytes + line.len() > MAX_LOG_BYTES {
            logs.push(LogEntry {
                level: LogLevel::Warn,
                message: "stderr lines dropped: output limit reached".into(),
            });
            break;
        }
        bytes += line.len();
        logs.push(LogEntry {
            level: LogLevel::Error,
            message: line.to_string(),
        });
    }
    logs
}

/// Log lines and bytes one invocation keeps.
const MAX_LOG_LINES: usize = 1000;
const MAX_LOG_BYTES: usize = 256 << 10;
