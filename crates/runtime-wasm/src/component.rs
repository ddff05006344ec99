//! Running a WASI 0.2 command component (`wasi:cli/run`): the same shape
//! as a preview 1 command (stdin in, stdout out, stderr as logs), its
//! failure an `Err` from `run`; under the same limits.

use crate::command::{deadline_ticks, exit_code, internal, wasi_for, Limiter};
use crate::engine::WasmEngine;
use isola_core::{ErrorCode, FunctionError, FunctionSource, InvocationInput, Outcome};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What a component's store holds.
pub struct State {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// A component compiled and linked against WASI 0.2.
pub struct PreparedComponent {
    pre: CommandPre<State>,
}

impl PreparedComponent {
    /// Validates and compiles `bytes`; refuses a component that is not a
    /// WASI command or imports anything but WASI.
    pub fn compile(engine: &WasmEngine, bytes: &[u8]) -> Result<Self, FunctionError> {
        let component = Component::new(&engine.engine, bytes).map_err(|e| {
            FunctionError::new(
                ErrorCode::InvalidFunction,
                format!("invalid WebAssembly component: {e:#}"),
            )
        })?;
        Self::link(engine, component)
    }

    /// Links a compiled component against WASI 0.2 (see [`Self::compile`]).
    pub fn link(engine: &WasmEngine, component: Component) -> Result<Self, FunctionError> {
        let mut linker: Linker<State> = Linker::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| internal("linking WASI 0.2", e))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            FunctionError::new(
                ErrorCode::LinkError,
                format!("the component imports what isola does not provide: {e:#}"),
            )
        })?;
        let pre = CommandPre::new(pre).map_err(|e| {
            FunctionError::new(
                ErrorCode::InvalidFunction,
                format!("the component is not a WASI command (it must export wasi:cli/run): {e:#}"),
            )
        })?;
        Ok(Self { pre })
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }
}

/// Runs the component once, in a fresh instance; blocks its thread.
pub fn run(
    engine: &WasmEngine,
    prepared: &PreparedComponent,
    function: &FunctionSource,
    stdin: Vec<u8>,
    input: &InvocationInput,
) -> Outcome {
    let _running = engine.running();
    let (mut wasi, capture) = wasi_for(function, stdin);
    let state = State {
        ctx: wasi.build(),
        table: ResourceTable::new(),
        limiter: Limiter::of(function),
    };
    let mut store = Store::new(&engine.engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(deadline_ticks(function));
    let ran = prepared
        .pre
        .instantiate(&mut store)
        .and_then(|command| command.wasi_cli_run().call_run(&mut store))
        // `run` failing without an exit code is exit code 1.
        .map(|run| if run.is_ok() { 0 } else { 1 })
        .or_else(exit_code);
    capture.finish(ran, function, input, &store.data().limiter)
}
