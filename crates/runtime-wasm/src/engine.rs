//! The wasmtime engine every Wasm function shares: instances, memories,
//! tables and async stacks come from wasmtime's pooling allocator (sized
//! for the runs the runtime allows at once), and epoch interruption is
//! driven by a ticker thread that runs only while Wasm does (an idle node
//! does not wake every millisecond).

use isola_core::{ErrorCode, FunctionError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the engine's epoch advances while Wasm runs: at each tick a
/// store checks its run's CPU and wall time (`crate::meter`).
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks the ticker goes on for after the last run ends, so that a busy
/// node does not wake it for every request.
const IDLE_TICKS: u32 = 100;

/// Runs under way now, and the ticker's sleep and wake-up.
#[derive(Default)]
struct Activity {
    running: AtomicUsize,
    asleep: Mutex<bool>,
    wake: Condvar,
}

/// The engine, cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    pub(crate) engine: wasmtime::Engine,
    activity: Arc<Activity>,
}

/// Held while a run goes on: the epoch advances only then (and a little
/// after).
pub struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WasmEngine {
    /// An engine for at most `runs` runs at once, with epoch interruption
    /// and a thread advancing its epoch while Wasm runs (for as long as
    /// the engine lives).
    pub fn new(runs: u32) -> Result<Self, FunctionError> {
        let mut config = compiling_config();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool(runs)));
        let engine = start(&config)?;
        let activity = Arc::new(Activity::default());
        let (ticking, watched) = (engine.weak(), activity.clone());
        std::thread::Builder::new()
            .name("isola-wasm-epoch".into())
            .spawn(move || tick(ticking, watched))
            .map_err(|e| {
                FunctionError::new(
                    ErrorCode::Internal,
                    format!("starting the epoch ticker: {e}"),
                )
            })?;
        Ok(Self { engine, activity })
    }

    /// Marks a run going on until the guard drops.
    pub fn running(&self) -> Running {
        if self.activity.running.fetch_add(1, Ordering::SeqCst) == 0
            && *self.activity.asleep.lock().unwrap()
        {
            self.activity.wake.notify_one();
        }
        Running(self.activity.clone())
    }
}

/// The settings compiled code depends on: the same in the node's engine
/// and in a compiler child's.
fn compiling_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config
}

fn start(config: &wasmtime::Config) -> Result<wasmtime::Engine, FunctionError> {
    wasmtime::Engine::new(config)
        .map_err(|e| FunctionError::new(ErrorCode::Internal, format!("starting wasmtime: {e}")))
}

/// An engine that only compiles (a compiler child's): the node's settings
/// without the pool, whose address space a compiler has no use for.
pub fn compiling_engine() -> Result<wasmtime::Engine, FunctionError> {
    start(&compiling_config())
}

/// What one run may take from the pool, at most: a component adapted from
/// preview 1 is several core instances, each with its memory and table.
const CORE_INSTANCES_PER_RUN: u32 = 4;

/// Bytes of a slot's memory or table kept (zeroed) between runs.
const KEEP_RESIDENT: usize = 128 << 10;

/// Tables a module may define (one memory: more is refused at deploy).
const TABLES_PER_MODULE: u32 = 8;

/// Largest table a function may have (elements); see the limiter.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The pool for `runs` runs at once. Slots are address space reserved up
/// front (a memory slot is its 4 GiB maximum plus guard pages), not memory
/// in use; what a run may really use is its function's `memory_mb`.
fn pool(runs: u32) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    let cores = runs * CORE_INSTANCES_PER_RUN;
    pool.total_component_instances(runs)
        .total_stacks(runs)
        .total_core_instances(cores)
        .total_memories(cores)
        .total_tables(cores * TABLES_PER_MODULE)
        .max_tables_per_module(TABLES_PER_MODULE)
        .max_core_instances_per_component(CORE_INSTANCES_PER_RUN)
        .max_memories_per_component(CORE_INSTANCES_PER_RUN)
        .max_tables_per_component(CORE_INSTANCES_PER_RUN * TABLES_PER_MODULE)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_unused_warm_slots(runs)
        // A small function's memory and tables are zeroed for the next
        // run rather than given back to the kernel: giving back pages
        // costs every core a TLB flush, zeroing a few pages does not.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    pool
}

/// Advances the epoch every [`TICK`] while Wasm runs and for
/// [`IDLE_TICKS`] after; sleeps otherwise; ends with the engine.
fn tick(engine: wasmtime::EngineWeak, activity: Arc<Activity>) {
    let mut idle = 0;
    loop {
        if activity.running.load(Ordering::SeqCst) == 0 {
            idle += 1;
        } else {
            idle = 0;
        }
        if idle > IDLE_TICKS {
            let mut asleep = activity.asleep.lock().unwrap();
            *asleep = true;
            while activity.running.load(Ordering::SeqCst) == 0 {
                let (waited, _) = activity
                    .wake
                    .wait_timeout(asleep, Duration::from_secs(1))
                    .unwrap();
                asleep = waited;
                if engine.upgrade().is_none() {
                    return;
                }
            }
            *asleep = false;
            idle = 0;
        }
        let Some(live) = engine.upgrade() else {
            return;
        };
        live.increment_epoch();
        drop(live);
        std::thread::sleep(TICK);
    }
}
