//! `isola dev ./worker.js`: serve one module at `/`, reloading it when the
//! file changes.

use anyhow::Context;
use clap::Args;
use isola_api::dev::DevState;
use isola_core::{FunctionSource, Invoker, Limits};
use isola_runtime_js::{Executor, ExecutorConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Arguments of `isola dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The module to serve.
    pub file: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub addr: SocketAddr,
    /// CPU time limit in milliseconds.
    #[arg(long, default_value_t = Limits::default().cpu_ms)]
    pub cpu_ms: u32,
}

fn load(path: &Path, generation: u64, cpu_ms: u32) -> anyhow::Result<FunctionSource> {
    let code =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .map_or("dev".into(), |s| s.to_string_lossy().into_owned());
    let mut source = FunctionSource::single_module(format!("dev:{generation}"), name, code);
    source.limits.cpu_ms = cpu_ms;
    Ok(source)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs `isola dev` until Ctrl-C.
pub async fn execute(args: DevArgs) -> anyhow::Result<crate::ExitStatus> {
    let executor: Arc<dyn Invoker> = Arc::new(Executor::new(ExecutorConfig::default()));
    let first = Arc::new(load(&args.file, 0, args.cpu_ms)?);
    if let Err(error) = executor.prepare(first.clone()).await {
        eprintln!("[error] {}: {}", error.code, error.message);
    }
    let source = Arc::new(RwLock::new(first));
    tokio::spawn(watch(
        args.file.clone(),
        args.cpu_ms,
        source.clone(),
        executor.clone(),
    ));
    let app = isola_api::dev::router(DevState {
        invoker: executor,
        source,
    });
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    eprintln!(
        "isola dev: serving {} on http://{} (reloads on change)",
        args.file.display(),
        listener.local_addr()?
    );
    isola_api::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(crate::ExitStatus::Success)
}

/// Polls the file and swaps in a new version when it changes.
async fn watch(
    path: PathBuf,
    cpu_ms: u32,
    current: Arc<RwLock<Arc<FunctionSource>>>,
    invoker: Arc<dyn Invoker>,
) {
    let mut seen = modified(&path);
    let mut generation = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        generation += 1;
        match load(&path, generation, cpu_ms) {
            Ok(source) => {
                let source = Arc::new(source);
                if let Err(error) = invoker.prepare(source.clone()).await {
                    eprintln!("[reload] {}: {}", error.code, error.message);
                }
                let old = std::mem::replace(&mut *current.write().unwrap(), source);
                invoker.evict(&old.id);
                eprintln!("[reload] {}", path.display());
            }
            Err(error) => eprintln!("[reload] {error:#}"),
        }
    }
}
