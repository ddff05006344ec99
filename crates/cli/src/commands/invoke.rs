//! `isola invoke`: run a module once in a local executor.
//!
//! The module comes from a file or, without one, from standard input. A JSON
//! handler's result is printed to stdout as JSON; a Workers-style handler
//! gets a `POST` with the payload as JSON body and its response body is
//! printed. Console output goes to stderr. A function error is printed to
//! stderr as a JSON object with `code` and `message`, and the exit code is 1.

use crate::ExitStatus;
use anyhow::{bail, Context};
use clap::Args;
use isola_core::{
    FunctionSource, Invocation, InvocationInput, InvocationOutput, Invoker, Limits, LogEntry,
    LogLevel, RuntimeKind,
};
use isola_runtime_js::{Executor, ExecutorConfig};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `isola invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The module to run; reads it from standard input when omitted.
    pub file: Option<PathBuf>,
    /// The JSON payload.
    #[arg(long, short = 'p')]
    pub payload: Option<String>,
    /// An environment variable for the function, as KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = Limits::default().memory_mb)]
    pub memory_mb: u32,
    /// CPU time limit in milliseconds.
    #[arg(long, default_value_t = Limits::default().cpu_ms)]
    pub cpu_ms: u32,
    /// Wall-clock limit in milliseconds.
    #[arg(long, default_value_t = Limits::default().timeout_ms)]
    pub timeout_ms: u32,
    /// For a Workers-style function, also print the status line and headers.
    #[arg(long, short = 'i')]
    pub include: bool,
}

fn read_module(file: Option<&PathBuf>) -> anyhow::Result<(String, Vec<u8>)> {
    let (name, bytes) = match file {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .file_stem()
                .map_or("function".into(), |s| s.to_string_lossy().into_owned());
            (name, bytes)
        }
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the module from standard input")?;
            ("stdin".to_string(), bytes)
        }
    };
    if !RuntimeKind::detect(&bytes).is_wasm() {
        let code = std::str::from_utf8(&bytes).context("the module is not valid UTF-8")?;
        if code.trim().is_empty() {
            bail!("the module is empty");
        }
    }
    Ok((name, bytes))
}

/// Runs `isola invoke`.
pub async fn execute(args: InvokeArgs) -> anyhow::Result<ExitStatus> {
    let (name, code) = read_module(args.file.as_ref())?;
    let payload: serde_json::Value = match &args.payload {
        Some(text) => serde_json::from_str(text).context("--payload is not valid JSON")?,
        None => serde_json::Value::Null,
    };
    let limits = Limits {
        memory_mb: args.memory_mb,
        cpu_ms: args.cpu_ms,
        timeout_ms: args.timeout_ms,
        ..Limits::default()
    };
    limits.validate().map_err(anyhow::Error::msg)?;
    let runtime = RuntimeKind::detect(&code);
    let mut source = FunctionSource::single_module("cli", name, "");
    source.files[0].code = code;
    source.runtime = runtime;
    if runtime.is_wasm() {
        source.entry = "main.wasm".into();
        source.files[0].path = "main.wasm".into();
    }
    // The module keeps its own file name (stacks and syntax errors say
    // `toplevel.js:2:7`); from stdin it is `main.js`.
    if let Some(file_name) = args.file.as_ref().and_then(|f| f.file_name()) {
        let file_name = file_name.to_string_lossy().into_owned();
        source.entry = file_name.clone();
        source.files[0].path = file_name;
    }
    source.limits = limits;
    source.env = crate::commands::functions::parse_pairs(&args.env, "--env")?;

    let executor = Arc::new(Executor::new(ExecutorConfig {
        workers: 1,
        ..ExecutorConfig::default()
    }));
    let wasm: Arc<dyn Invoker> = Arc::new(isola_runtime_wasm::WasmRuntime::new()?);
    let invoker = isola_core::Dispatch::new(executor, Some(wasm));
    let outcome = invoker
        .invoke(Invocation {
            id: "cli".into(),
            function: Arc::new(source),
            input: InvocationInput::Json(payload),
        })
        .await;
    print_logs(&outcome.logs);
    match outcome.result {
        Ok(output) => {
            print_output(output, args.include).await?;
            Ok(ExitStatus::Success)
        }
        Err(error) => {
            eprintln!("{}", serde_json::to_string(&error)?);
            Ok(ExitStatus::FunctionFailed)
        }
    }
}

fn print_logs(logs: &[LogEntry]) {
    let mut stderr = std::io::stderr().lock();
    for entry in logs {
        let prefix = match entry.level {
            LogLevel::Debug => "debug: ",
            LogLevel::Info => "",
            LogLevel::Warn => "warn: ",
            LogLevel::Error => "error: ",
        };
        let _ = writeln!(stderr, "{prefix}{}", entry.message);
    }
}

async fn print_output(output: InvocationOutput, include: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        InvocationOutput::Json(value) => writeln!(stdout, "{}", serde_json::to_string(&value)?)?,
        InvocationOutput::Http(response) => {
            if include {
                writeln!(stdout, "HTTP {}", response.status)?;
                for (name, value) in &response.headers {
                    writeln!(stdout, "{name}: {value}")?;
                }
                writeln!(stdout)?;
            }
            stdout.write_all(&response.body)?;
            if let Some(mut rest) = response.rest.take() {
                while let Some(chunk) = rest.recv().await {
                    stdout.write_all(&chunk.map_err(anyhow::Error::msg)?)?;
                    stdout.flush()?;
                }
            }
        }
    }
    Ok(())
}
