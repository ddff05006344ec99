//! The wasmtime engine every Wasm function shares, with epoch
//! interruption driven by a ticker thread.

use isola_core::{ErrorCode, FunctionError};
use std::time::Duration;

/// How often the engine's epoch advances: a store's CPU deadline is
/// counted in these.
pub const TICK: Duration = Duration::from_millis(1);

/// The engine, cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    pub(crate) engine: wasmtime::Engine,
}

impl WasmEngine {
    /// An engine with epoch interruption and a thread advancing its epoch
    /// (for as long as the process runs).
    pub fn new() -> Result<Self, FunctionError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).map_err(|e| {
            FunctionError::new(ErrorCode::Internal, format!("starting wasmtime: {e}"))
        })?;
        let ticking = engine.weak();
        std::thread::Builder::new()
            .name("isola-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticking.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| {
                FunctionError::new(
                    ErrorCode::Internal,
                    format!("starting the epoch ticker: {e}"),
                )
            })?;
        Ok(Self { engine })
    }

    /// Ticks in `duration`, at least one.
    pub fn ticks(duration: Duration) -> u64 {
        (duration.as_micros() / TICK.as_micros()).max(1) as u64
    }
}
