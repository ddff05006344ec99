//! `isola-bench`: in-process benchmarks of the JavaScript runtime.
//!
//! Not timed tests: each command prints its figures (and JSON with `--json`)
//! for `docs/benchmarks.md`. Every loop is bounded in count and time.

mod runtime;
mod stats;
mod wasm;
mod websocket;

use clap::{Parser, Subcommand};

/// Benchmarks of isola's runtime.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cold starts: new isolate from the snapshot + module evaluation + first invocation.
    Cold(runtime::ColdArgs),
    /// Warm invocations of a trivial JSON handler: latency on one worker, throughput on all.
    Warm(runtime::WarmArgs),
    /// Resident memory per warm idle isolate.
    Memory(runtime::MemoryArgs),
    /// WebAssembly: instantiate + invoke from the runtime, and a compute kernel as Wasm vs JS.
    Wasm(wasm::WasmArgs),
    /// Writes a `wasi:http` hello component (built from WAT) to a file.
    WasmHello(wasm::HelloArgs),
    /// WebSocket echo load against a loopback server: messages/s and round trips.
    WsEcho(websocket::EchoArgs),
    /// Many idle WebSocket connections held open (for the server's memory).
    WsIdle(websocket::IdleArgs),
}

fn main() -> anyhow::Result<()> {
    isola_runtime_js::init_platform();
    let cli = Cli::parse();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        match cli.command {
            Command::Cold(args) => runtime::cold(args).await,
            Command::Warm(args) => runtime::warm(args).await,
            Command::Memory(args) => runtime::memory(args).await,
            Command::Wasm(args) => wasm::wasm(args).await,
            Command::WasmHello(args) => wasm::hello(args),
            Command::WsEcho(args) => websocket::echo(args).await,
            Command::WsIdle(args) => websocket::idle(args).await,
        }
    })
}
