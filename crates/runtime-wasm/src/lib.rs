//! isola's WebAssembly runtime: functions that are WASI commands (preview
//! 1 core modules, as any language targeting `wasm32-wasi` builds, or WASI
//! 0.2 command components) or `wasi:http` handlers (components), run by
//! wasmtime under the same limits and error codes as JavaScript functions.
//!
//! - **Commands.** The invocation's payload (a JSON invocation's JSON
//!   text, an HTTP request's body) is the command's stdin; what it writes
//!   to stdout is the result (JSON when it parses as JSON, else a string;
//!   over HTTP the response body); each line it writes to stderr is a log
//!   line; a non-zero exit code is a function error. Variables and secrets
//!   are its environment. No files, no sockets, no clocks beyond WASI's.
//! - **HTTP handlers** ([`http`]) get the request and stream their
//!   response; their outbound requests obey the JavaScript `fetch` rules
//!   ([`outbound`]).
//! - **Limits.** CPU by epoch interruption: a ticker thread advances the
//!   engine's epoch every millisecond while Wasm runs, and at each tick a
//!   store compares its run's CPU time with `cpu_ms` and the clock with
//!   `timeout_ms` ([`meter`]). Memory by a `ResourceLimiter` (linear
//!   memories and tables within `memory_mb`; growing past it traps as
//!   `memory_limit`); stdout and stderr bounded. Runs are tasks on the
//!   caller's threads ([`task`]), at most [`RUNS_PER_CORE`] per core at
//!   once.
//! - **Compilation.** A module is validated and compiled at deploy
//!   ([`Invoker::prepare`]), its `InstancePre` kept per function version;
//!   each invocation gets a fresh instance. With a cache folder, compiled
//!   modules are kept on disk ([`cache`]) and a restarted node loads them
//!   instead of compiling again.

mod cache;
mod command;
pub mod compile;
mod component;
mod engine;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod gate;
mod http;
mod kv;
mod meter;
mod outbound;
mod task;

use isola_core::{
    BoxFuture, ErrorCode, FunctionError, FunctionSource, Invocation, Invoker, InvokerStats,
    Outcome, RuntimeKind,
};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

use component::PreparedComponent;
pub use engine::WasmEngine;

/// A function compiled and linked, ready to instantiate.
enum Prepared {
    /// A WASI preview 1 command (a core module).
    Module(command::Prepared),
    /// A WASI 0.2 component: a command or an HTTP handler.
    Component(PreparedComponent),
}

/// Compiled modules kept in memory, at most (the least recently used go).
const MAX_CACHED: usize = 256;

/// Runs WebAssembly functions; see the crate docs.
pub struct WasmRuntime {
    compiler: Arc<Compiler>,
    /// Who may run: memory, per-function shares, slots.
    gate: Arc<gate::Gate>,
    /// The slots the gate has.
    slots: usize,
    /// One compilation at once (a large module takes seconds and every core).
    compiling: Arc<Semaphore>,
    /// The node's KV store, for components' `isola:kv`.
    kv: Option<Arc<dyn isola_kv::KvStore>>,
}

/// Runs at once per core: each may hold its memory limit.
pub const RUNS_PER_CORE: usize = 16;

/// What compiling needs, shared with the blocking threads that do it.
struct Compiler {
    engine: WasmEngine,
    /// Compiled and linked modules and components, by function version,
    /// the most recently used kept.
    prepared: Mutex<lru::LruCache<String, Arc<Prepared>>>,
    /// Compiled modules on disk, if the node keeps them.
    artifacts: Option<cache::ArtifactCache>,
    /// Modules compiled (not loaded from the cache) so far.
    compiled: std::sync::atomic::AtomicU64,
    /// Where modules are compiled: a child process, or here.
    process: Option<compile::CompilerProcess>,
}

impl WasmRuntime {
    /// A runtime with its own engine and epoch ticker.
    pub fn new() -> Result<Self, FunctionError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let compiler = Compiler {
            engine: WasmEngine::new((cores * RUNS_PER_CORE) as u32)?,
            prepared: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_CACHED).expect("non-zero"),
            )),
            artifacts: None,
            compiled: Default::default(),
            process: None,
        };
        Ok(Self {
            compiler: Arc::new(compiler),
            gate: gate::Gate::new(
                cores * RUNS_PER_CORE,
                Arc::new(isola_core::admission::Admission::new(
                    isola_core::admission::physical_memory_mb() / 4 * 3,
                )),
            ),
            slots: cores * RUNS_PER_CORE,
            compiling: Arc::new(Semaphore::new(1)),
            kv: None,
        })
    }

    /// Keeps compiled modules in `dir` (the node's own), across restarts.
    pub fn with_cache(mut self, dir: std::path::PathBuf) -> Result<Self, FunctionError> {
        let cache = cache::ArtifactCache::new(dir).map_err(|e| {
            FunctionError::new(ErrorCode::Internal, format!("the Wasm cache folder: {e}"))
        })?;
        if let Some(compiler) = Arc::get_mut(&mut self.compiler) {
            compiler.artifacts = Some(cache);
        }
        Ok(self)
    }

    /// Compiles modules in child processes, within `process`'s limits (see
    /// [`compile`]), rather than in this one.
    pub fn with_compiler_process(mut self, process: compile::CompilerProcess) -> Self {
        if let Some(compiler) = Arc::get_mut(&mut self.compiler) {
            compiler.process = Some(process);
        }
        self
    }

    /// Reserves each run's memory from `admission` (the node's, shared
    /// with JavaScript) instead of a budget of its own.
    pub fn with_admission(mut self, admission: Arc<isola_core::admission::Admission>) -> Self {
        self.gate = gate::Gate::new(self.slots, admission);
        self
    }

    /// Gives components `isola:kv`: their function's namespace of `store`
    /// (when their deployment has a KV binding).
    pub fn with_kv(mut self, store: Arc<dyn isola_kv::KvStore>) -> Self {
        self.kv = Some(store);
        self
    }

    /// Modules compiled so far (those loaded from the cache not counted).
    pub fn compiled(&self) -> u64 {
        self.compiler
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The function's compiled module or component; compiled (or loaded
    /// from the cache) on a blocking thread, one at a time, if need be.
    async fn prepared(
        &self,
        function: &Arc<FunctionSource>,
    ) -> Result<Arc<Prepared>, FunctionError> {
        if let Some(found) = self.compiler.prepared.lock().unwrap().get(&function.id) {
            return Ok(found.clone());
        }
        // Compilations go one at a time; a wait is bounded like a run.
        let _turn = gate::wait_for(
            function.limits.timeout(),
            self.compiling.acquire(),
            "the node is busy compiling other WebAssembly: retry shortly",
        )
        .await?;
        // Another call may have compiled it while this one waited.
        if let Some(found) = self.compiler.prepared.lock().unwrap().get(&function.id) {
            return Ok(found.clone());
        }
        let (compiler, function) = (self.compiler.clone(), function.clone());
        tokio::task::spawn_blocking(move || compiler.prepared(&function))
            .await
            .unwrap_or_else(|_| Err(FunctionError::new(ErrorCode::Internal, "compiling stopped")))
    }
}

/// Compiled code, before it is linked.
enum Compiled {
    Module(wasmtime::Module),
    Component(wasmtime::component::Component),
}

impl Compiled {
    /// Validates and compiles `bytes` here, as a component or a module.
    fn compile(
        engine: &wasmtime::Engine,
        component: bool,
        bytes: &[u8],
    ) -> Result<Self, FunctionError> {
        let compiled = if component {
            wasmtime::component::Component::new(engine, bytes).map(Self::Component)
        } else {
            wasmtime::Module::new(engine, bytes).map(Self::Module)
        };
        compiled.map_err(|e| {
            let what = if component { "component" } else { "module" };
            FunctionError::new(
                ErrorCode::InvalidFunction,
                format!("invalid WebAssembly {what}: {e:#}"),
            )
        })
    }

    /// Loads an artifact.
    ///
    /// # Safety
    /// `artifact` must be what `serialize` (or a compiler child of this
    /// binary) made; wasmtime checks that a compatible engine made it.
    unsafe fn deserialize(
        engine: &wasmtime::Engine,
        component: bool,
        artifact: &[u8],
    ) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe {
            if component {
                wasmtime::component::Component::deserialize(engine, artifact).map(Self::Component)
            } else {
                wasmtime::Module::deserialize(engine, artifact).map(Self::Module)
            }
        }
    }

    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Self::Module(module) => module.serialize(),
            Self::Component(component) => component.serialize(),
        }
    }
}

impl Compiler {
    /// The compiled code of `bytes`: from the cache, or compiled (in a
    /// child process when the node has one) and then kept in the cache.
    fn compiled(&self, component: bool, bytes: &[u8]) -> Result<Compiled, FunctionError> {
        let engine = &self.engine.engine;
        if let Some(artifact) = self.artifacts.as_ref().and_then(|c| c.read(engine, bytes)) {
            // SAFETY: the cache keeps only artifacts it was given below.
            // One that does not load is compiled again.
            if let Ok(compiled) = unsafe { Compiled::deserialize(engine, component, &artifact) } {
                return Ok(compiled);
            }
        }
        let (compiled, artifact) = match &self.process {
            Some(process) => {
                let artifact = process.compile(bytes)?;
                // SAFETY: this binary's compiler child made it for this
                // engine's settings.
                let compiled = unsafe { Compiled::deserialize(engine, component, &artifact) }
                    .map_err(|e| command::internal("loading compiled WebAssembly", e))?;
                (compiled, Some(artifact))
            }
            None => (Compiled::compile(engine, component, bytes)?, None),
        };
        self.compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(cache) = &self.artifacts {
            let artifact = artifact.map_or_else(|| compiled.serialize(), Ok);
            cache.store(engine, bytes, artifact);
        }
        Ok(compiled)
    }

    /// The function's compiled module or component, compiled now if need be.
    fn prepared(&self, function: &FunctionSource) -> Result<Arc<Prepared>, FunctionError> {
        if let Some(found) = self.prepared.lock().unwrap().get(&function.id) {
            return Ok(found.clone());
        }
        let bytes = function.file_bytes(&function.entry).ok_or_else(|| {
            FunctionError::new(ErrorCode::InvalidFunction, "the entry file is missing")
        })?;
        let component = function.runtime == RuntimeKind::WasmComponent;
        let prepared = Arc::new(match self.compiled(component, bytes)? {
            Compiled::Module(module) => {
                Prepared::Module(command::Prepared::link(&self.engine, module)?)
            }
            Compiled::Component(component) => {
                Prepared::Component(PreparedComponent::link(&self.engine, component)?)
            }
        });
        self.prepared
            .lock()
            .unwrap()
            .put(function.id.clone(), prepared.clone());
        Ok(prepared)
    }
}

impl WasmRuntime {
    async fn run(&self, invocation: Invocation) -> Outcome {
        let prepared = match self.prepared(&invocation.function).await {
            Ok(prepared) => prepared,
            Err(error) => return Outcome::failed(error),
        };
        // A command's input is read whole before a turn is taken: a slow
        // client holds nothing that other functions need. A handler reads
        // its body as it arrives.
        let is_handler = matches!(&*prepared, Prepared::Component(PreparedComponent::Http(_)));
        let stdin = if is_handler {
            Vec::new()
        } else {
            match command::stdin_of(&invocation.input).await {
                Ok(stdin) => stdin,
                Err(error) => return Outcome::failed(error),
            }
        };
        let timeout = invocation.function.limits.timeout();
        let turn = match self.gate.enter(&invocation.function).await {
            Ok(turn) => turn,
            Err(error) => return Outcome::failed(error),
        };
        let engine = self.compiler.engine.clone();
        let Invocation {
            function, input, ..
        } = invocation;
        let meter = Arc::new(meter::Meter::default());
        let metered = meter.clone();
        let kv = self.kv.clone();
        let placement = if is_handler {
            task::Placement::Task
        } else {
            task::Placement::Inline
        };
        task::run(placement, timeout, meter, move |reply| async move {
            // The turn ends with the run, not with the caller's wait; the
            // epoch ticks while it goes on.
            let _turn = turn;
            let _running = engine.running();
            let outcome = match &*prepared {
                Prepared::Module(module) => {
                    command::run(&engine, module, &function, stdin, &input, metered).await
                }
                Prepared::Component(PreparedComponent::Command(pre)) => {
                    let kv = kv.as_ref();
                    component::run_command(&engine, pre, &function, stdin, &input, metered, kv)
                        .await
                }
                Prepared::Component(PreparedComponent::Http(pre)) => {
                    let kv = kv.as_ref();
                    return http::serve(&engine, pre, &function, input, metered, kv, &reply).await;
                }
            };
            reply.send(outcome);
        })
        .await
    }
}

impl Invoker for WasmRuntime {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(self.run(invocation))
    }

    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        Box::pin(async move {
            function
                .limits
                .validate()
                .map_err(|message| FunctionError::new(ErrorCode::InvalidInput, message))?;
            self.prepared(&function).await.map(|_| ())
        })
    }

    fn evict(&self, function_id: &str) {
        self.compiler.prepared.lock().unwrap().pop(function_id);
    }

    fn stats(&self) -> InvokerStats {
        InvokerStats::default()
    }
}
