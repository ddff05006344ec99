//! The wasmtime engine every Wasm function shares, with epoch
//! interruption driven by a ticker thread that runs only while commands
//! do (an idle node does not wake every millisecond).

use isola_core::{ErrorCode, FunctionError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the engine's epoch advances while commands run: a store's
/// CPU deadline is counted in these.
pub const TICK: Duration = Duration::from_millis(1);

/// Commands running now, and the ticker's wake-up.
#[derive(Default)]
struct Activity {
    running: Mutex<usize>,
    wake: Condvar,
}

/// The engine, cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    pub(crate) engine: wasmtime::Engine,
    activity: Arc<Activity>,
}

/// Held while a command runs: the epoch advances only then.
pub struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap() -= 1;
    }
}

impl WasmEngine {
    /// An engine with epoch interruption and a thread advancing its epoch
    /// while commands run (for as long as the engine lives).
    pub fn new() -> Result<Self, FunctionError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).map_err(|e| {
            FunctionError::new(ErrorCode::Internal, format!("starting wasmtime: {e}"))
        })?;
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

    /// Marks a command running until the guard drops.
    pub fn running(&self) -> Running {
        *self.activity.running.lock().unwrap() += 1;
        self.activity.wake.notify_one();
        Running(self.activity.clone())
    }

    /// Ticks in `duration`, at least one.
    pub fn ticks(duration: Duration) -> u64 {
        (duration.as_micros() / TICK.as_micros()).max(1) as u64
    }
}

/// Advances the epoch every [`TICK`] while a command runs; sleeps
/// otherwise; ends with the engine.
fn tick(engine: wasmtime::EngineWeak, activity: Arc<Activity>) {
    loop {
        {
            let mut running = activity.running.lock().unwrap();
            while *running == 0 {
                let (waited, _) = activity
                    .wake
                    .wait_timeout(running, Duration::from_secs(1))
                    .unwrap();
                running = waited;
                if *running == 0 && engine.upgrade().is_none() {
                    return;
                }
            }
        }
        let Some(live) = engine.upgrade() else {
            return;
        };
        live.increment_epoch();
        drop(live);
        std::thread::sleep(TICK);
    }
}
