//! `isola dev ./worker.js` (or a project folder with an `isola.toml`):
//! serve the function at `/`, reloading it when its files change. Functions
//! with a KV binding get a KV store of their own in a temporary folder.

use crate::project::{collect_files, Project};
use anyhow::Context;
use clap::Args;
use isola_api::dev::DevState;
use isola_core::{FunctionSource, Invoker};
use isola_runtime_js::{Executor, ExecutorConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Arguments of `isola dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The module to serve, or a project (a folder with an isola.toml, or
    /// the file itself); default: the current folder.
    #[arg(default_value = ".")]
    pub file: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub addr: SocketAddr,
    /// CPU time limit in milliseconds (default: the project's, else 50).
    #[arg(long)]
    pub cpu_ms: Option<u32>,
}

fn load(path: &Path, generation: u64, cpu_ms: Option<u32>) -> anyhow::Result<FunctionSource> {
    let mut source = match Project::find(path) {
        Some(file) => {
            let project = Project::load(&file)?;
            FunctionSource {
                id: String::new(),
                name: project.name.clone(),
                entry: project.main.clone(),
                files: project.files()?,
                limits: project.limits(),
                env: project.vars.clone(),
                kv_binding: project.kv_binding.clone(),
                allowed_hosts: project.allowed_hosts.clone(),
                runtime: Default::default(),
            }
        }
        None => {
            let (files, entry) = collect_files(path, None)?;
            let name = path
                .file_stem()
                .map_or("dev".into(), |s| s.to_string_lossy().into_owned());
            let mut source = FunctionSource::single_module(String::new(), name, "");
            source.files = files;
            source.entry = entry;
            source
        }
    };
    source.id = format!("dev:{generation}");
    source.runtime = source
        .file_bytes(&source.entry)
        .map_or(Default::default(), isola_core::RuntimeKind::detect);
    if let Some(cpu_ms) = cpu_ms {
        source.limits.cpu_ms = cpu_ms;
    }
    Ok(source)
}

/// Latest modification time and number of the files under `path`.
fn fingerprint(path: &Path) -> (Option<SystemTime>, usize) {
    let mut latest = None;
    let mut count = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(item) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&item) else {
            continue;
        };
        if meta.is_dir() {
            let skipped = item != path
                && item
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.') || n == "node_modules");
            if !skipped {
                stack.extend(
                    std::fs::read_dir(&item)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
            }
        } else {
            count += 1;
            latest = latest.max(meta.modified().ok());
        }
    }
    (latest, count)
}

/// What a function is given: its bindings and limits, in one line.
fn describe(source: &FunctionSource) -> String {
    let limits = &source.limits;
    let mut bindings: Vec<String> = source.env.keys().map(|k| format!("env.{k}")).collect();
    if let Some(kv) = &source.kv_binding {
        bindings.push(format!("env.{kv} (KV, emptied when dev stops)"));
    }
    let bindings = if bindings.is_empty() {
        "none".to_string()
    } else {
        bindings.join(", ")
    };
    format!(
        "entry {}; bindings: {bindings}; limits: CPU {} ms, memory {} MiB, wall {} ms",
        source.entry, limits.cpu_ms, limits.memory_mb, limits.timeout_ms
    )
}

/// Runs `isola dev` until Ctrl-C.
pub async fn execute(args: DevArgs) -> anyhow::Result<crate::ExitStatus> {
    let kv_dir = std::env::temp_dir().join(format!("isola-dev-kv-{}", std::process::id()));
    std::fs::create_dir_all(&kv_dir)?;
    let kv: Arc<dyn isola_kv::KvStore> = Arc::new(isola_kv::SqliteKv::open(
        &kv_dir.join("kv.db"),
        isola_kv::KvLimits::default(),
    )?);
    let workers = Arc::new(Executor::new(ExecutorConfig {
        kv: Some(kv.clone()),
        ..ExecutorConfig::default()
    }));
    let wasm: Arc<dyn Invoker> = Arc::new(
        isola_runtime_wasm::WasmRuntime::new()?
            .with_kv(kv)
            .with_admission(workers.admission()),
    );
    let executor: Arc<dyn Invoker> =
        Arc::new(isola_core::Dispatch::new(workers.clone(), Some(wasm)));
    let first = Arc::new(load(&args.file, 0, args.cpu_ms)?);
    if let Err(error) = executor.prepare(first.clone()).await {
        eprintln!("[error] {}: {}", error.code, error.message);
    }
    eprintln!("{}", describe(&first));
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
    let listener =
        crate::serving::listen(args.addr).with_context(|| format!("listening on {}", args.addr))?;
    eprintln!(
        "isola dev: serving {} on http://{} (reloads on change)",
        args.file.display(),
        listener.local_addr()?
    );
    let stopped = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::serving::serve_on_workers(&workers, listener, app, stopped).await?;
    Ok(crate::ExitStatus::Success)
}

/// Polls the file and swaps in a new version when it changes.
async fn watch(
    path: PathBuf,
    cpu_ms: Option<u32>,
    current: Arc<RwLock<Arc<FunctionSource>>>,
    invoker: Arc<dyn Invoker>,
) {
    let mut seen = fingerprint(&path);
    let mut generation = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = fingerprint(&path);
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
