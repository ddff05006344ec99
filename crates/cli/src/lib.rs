//! The `isola` command line. Each subcommand lives in its own module under
//! [`commands`] with an `execute` function; this file only parses arguments,
//! starts tokio, and turns errors into exit codes.
//!
//! The binary must call `isola_runtime_js::init_platform()` before [`run`],
//! so that V8 is initialised before any thread exists.

mod argv;
mod client;
pub mod commands;
mod config;
mod exit;
mod output;
mod project;
mod serving;

use clap::{Parser, Subcommand};
pub use exit::ExitStatus;
use std::process::ExitCode;

/// isola: a self-hostable serverless platform running functions in V8 isolates.
#[derive(Debug, Parser)]
#[command(name = "isola", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a runnable project: isola.toml, the source, a README.
    Init(commands::init::InitArgs),
    /// Start a single node: HTTP API, function traffic and embedded storage.
    Serve(commands::serve::ServeArgs),
    /// Serve one module at / for local development, reloading on change.
    Dev(commands::dev::DevArgs),
    /// Deploy a project or module, creating its function if it does not exist.
    Deploy(commands::functions::TopDeployArgs),
    /// Manage functions on a server: create, deploy, invoke, logs, rollback.
    #[command(alias = "fn")]
    Functions(commands::functions::FunctionsArgs),
    /// Read and write a function's KV namespace: get, put, delete, list.
    Kv(commands::kv::KvArgs),
    /// Manage a function's secrets without redeploying its code: put, list, delete.
    Secret(commands::secret::SecretArgs),
    /// Whether the server answers, its version, functions and warm isolates.
    Status(commands::status::StatusArgs),
    /// Remember a server and its admin token.
    Login(commands::login::LoginArgs),
    /// Run a function module once, locally, and print its result.
    Invoke(commands::invoke::InvokeArgs),
    /// Compiles a WebAssembly module or component from stdin to stdout, for
    /// `isola serve` (which runs it in a child process, within limits).
    #[command(name = "__wasm-compile", hide = true)]
    WasmCompile,
    /// Print a shell completion script: `isola completions bash > /etc/bash_completion.d/isola`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Parses the command line, runs the command, and returns the exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse_from(argv::hoist_globals(std::env::args_os().collect()));
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "isola", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Command::WasmCompile = cli.command {
        // The binary answers it before V8 starts (see its main).
        let code = isola_runtime_wasm::compile::child_main();
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit::report(anyhow::anyhow!("starting tokio: {error}"), false),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init(args) => commands::init::execute(args).await,
            Command::Serve(args) => commands::serve::execute(args).await,
            Command::Dev(args) => commands::dev::execute(args).await,
            Command::Deploy(args) => commands::functions::deploy(args).await,
            Command::Functions(args) => commands::functions::execute(args).await,
            Command::Kv(args) => commands::kv::execute(args).await,
            Command::Secret(args) => commands::secret::execute(args).await,
            Command::Login(args) => commands::login::execute(args).await,
            Command::Status(args) => commands::status::execute(args).await,
            Command::Invoke(args) => commands::invoke::execute(args).await,
            Command::Completions { .. } | Command::WasmCompile => {
                unreachable!("answered before tokio starts")
            }
        }
    });
    match result {
        Ok(status) => status.into(),
        // `--json` is global: errors come as JSON too.
        Err(error) => exit::report(error, std::env::args().any(|arg| arg == "--json")),
    }
}
