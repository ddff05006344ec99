//! WASI 0.2 components: commands (`wasi:cli/run`: the same shape as a
//! preview 1 command, stdin in and stdout out) and HTTP handlers
//! (`wasi:http/incoming-handler`, see [`crate::http`]). Both are linked
//! against WASI 0.2 and `wasi:http` (outbound requests go through
//! [`crate::outbound`]) and run under the same limits as commands.

use crate::command::{exit_code, internal, wasi_for, Limiter};
use crate::engine::WasmEngine;
use crate::kv::KvAccess;
use crate::meter::Meter;
use crate::outbound::Outbound;
use isola_core::{ErrorCode, FunctionError, FunctionSource, InvocationInput, Outcome};
use isola_kv::KvStore;
use std::sync::Arc;
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What a component's store holds.
pub struct State {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Outbound,
    kv: KvAccess,
    pub(crate) limiter: Limiter,
}

impl State {
    /// A store's state for one run of `function`, with the node's KV
    /// store if it has one.
    pub(crate) fn new(
        ctx: WasiCtx,
        function: &FunctionSource,
        kv: Option<&Arc<dyn KvStore>>,
    ) -> Self {
        let mut table = ResourceTable::new();
        // Each resource (a request, a body, a stream) may hold host memory
        // the limiter does not see: there are few of them.
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            ctx,
            table,
            http: {
                let mut http = WasiHttpCtx::new();
                http.set_field_size_limit(MAX_FIELDS_BYTES);
                http
            },
            hooks: Outbound::of(function),
            kv: KvAccess::of(kv, function),
            limiter: Limiter::of(function),
        }
    }
}

/// Most resources one run may hold at once: with headers of at most
/// [`MAX_FIELDS_BYTES`] and 64 KiB in flight per body, what they can hold
/// on the host stays within the few MiB the gate reserves for it.
const MAX_RESOURCES: usize = 256;

/// Most bytes of one header list (a request's or a response's), as the
/// host holds it.
const MAX_FIELDS_BYTES: usize = 32 << 10;

/// `isola:kv/store`'s view of a store's state.
struct Kv;

impl HasData for Kv {
    type Data<'a> = &'a mut KvAccess;
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A component compiled and linked, by what it exports.
pub enum PreparedComponent {
    /// A command (`wasi:cli/run`).
    Command(CommandPre<State>),
    /// An HTTP handler (`wasi:http/incoming-handler`).
    Http(ProxyPre<State>),
}

impl PreparedComponent {
    /// Links a compiled component; refuses one that is neither a command
    /// nor an HTTP handler, or imports anything but WASI 0.2, `wasi:http`
    /// and `isola:kv`.
    pub fn link(engine: &WasmEngine, component: Component) -> Result<Self, FunctionError> {
        let mut linker: Linker<State> = Linker::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| internal("linking WASI 0.2", e))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| internal("linking wasi:http", e))?;
        crate::kv::add_to_linker::<State, Kv>(&mut linker, |state| &mut state.kv)
            .map_err(|e| internal("linking isola:kv", e))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            FunctionError::new(
                ErrorCode::LinkError,
                format!("the component imports what isola does not provide: {e:#}"),
            )
        })?;
        if let Ok(proxy) = ProxyPre::new(pre.clone()) {
            return Ok(Self::Http(proxy));
        }
        let command = CommandPre::new(pre).map_err(|e| {
            FunctionError::new(
                ErrorCode::InvalidFunction,
                format!(
                    "the component exports neither wasi:http/incoming-handler nor wasi:cli/run: {e:#}"
                ),
            )
        })?;
        Ok(Self::Command(command))
    }
}

/// Runs a command component once, in a fresh instance.
pub async fn run_command(
    engine: &WasmEngine,
    pre: &CommandPre<State>,
    function: &FunctionSource,
    stdin: Vec<u8>,
    input: &InvocationInput,
    meter: Arc<Meter>,
    kv: Option<&Arc<dyn KvStore>>,
) -> Outcome {
    let (mut wasi, capture) = wasi_for(function, stdin, meter);
    let state = State::new(wasi.build(), function, kv);
    let mut store = crate::command::new_store(engine, function, state, &capture);
    let ran = async {
        let command = pre.instantiate_async(&mut store).await?;
        command.wasi_cli_run().call_run(&mut store).await
    }
    .await
    // `run` failing without an exit code is exit code 1.
    .map(|run| if run.is_ok() { 0 } else { 1 })
    .or_else(exit_code);
    capture.finish(ran, function, input, &store.data().limiter.usage())
}
