//! `isola serve`: a single node with embedded storage, or with `--nats`
//! a node of a cluster (`cluster`).
//!
//! The data directory is private to the node's user (0700, files 0600),
//! and deployment secrets in its database are sealed with a node key kept
//! in a separate file (`<data>/node.key` unless `--node-key-file` says
//! otherwise), created on first start.

mod cluster;

use anyhow::Context;
use clap::Args;
pub use cluster::Role;
use isola_api::{hash_token, new_token, ServerConfig, TOKEN_HASH_KEY};
use isola_runtime_js::{Executor, ExecutorConfig};
use isola_store::{NodeKey, Registry, Retention, SqliteRegistry};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `isola serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787", env = "ISOLA_ADDR")]
    pub addr: SocketAddr,
    /// Data directory (SQLite database).
    #[arg(long, default_value = "./.isola", env = "ISOLA_DATA")]
    pub data: PathBuf,
    /// File of the key sealing deployment secrets (default: <data>/node.key;
    /// created on first start). Keep a copy: without it the secrets are lost.
    #[arg(long, env = "ISOLA_NODE_KEY_FILE")]
    pub node_key_file: Option<PathBuf>,
    /// Admin token to accept (stored hashed); generated on first start if unset.
    #[arg(long, env = "ISOLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A token accepted on /metrics only (for scrapers); the admin token
    /// works there too.
    #[arg(long, env = "ISOLA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Route `<name>.<base-domain>` to function `<name>`.
    #[arg(long)]
    pub base_domain: Option<String>,
    /// Worker threads running isolates (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest request body passed to a function, in MiB.
    #[arg(long, default_value_t = 10)]
    pub max_request_mb: usize,
    /// Largest response body a function may return, in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_response_mb: usize,
    /// Invocation records and logs older than this many hours are deleted.
    #[arg(long, default_value_t = 72)]
    pub retention_hours: u64,
    /// At most this many invocation records (the newest) are kept.
    #[arg(long, default_value_t = 1_000_000)]
    pub retention_max_records: u64,
    /// At most this many log lines (the newest) are kept.
    #[arg(long, default_value_t = 5_000_000)]
    pub retention_max_log_lines: u64,
    /// Most MiB of invocation records waiting to be written; past it,
    /// records are dropped (counted in isola_records_dropped_total).
    #[arg(long, default_value_t = 64)]
    pub record_queue_mb: usize,
    /// Most WebSocket connections open on the node, all functions together.
    #[arg(long, env = "ISOLA_MAX_WEBSOCKETS", default_value_t = 10_000)]
    pub max_websockets: usize,
    /// Memory the node's WebSocket connections may hold in messages being
    /// received, in MiB (each reserves its function's websocket_message_kb).
    #[arg(long, env = "ISOLA_WEBSOCKET_BUFFER_MB", default_value_t = 4096)]
    pub websocket_buffer_mb: usize,
    /// CPU time one Wasm compilation may use at deploy, in seconds (it runs
    /// in a child process, killed past this).
    #[arg(long, env = "ISOLA_WASM_COMPILE_CPU_S", default_value_t = 60)]
    pub wasm_compile_cpu_s: u64,
    /// Memory (address space) one Wasm compilation may use, in MiB.
    #[arg(long, env = "ISOLA_WASM_COMPILE_MEMORY_MB", default_value_t = 4096)]
    pub wasm_compile_memory_mb: u64,
    /// Log each function request (function, method, path, status, time,
    /// CPU, cold start) at info level.
    #[arg(long, env = "ISOLA_ACCESS_LOG")]
    pub access_log: bool,
    /// How the node logs: `text` for people, `json` (one object per line)
    /// for log collectors. What it logs: `ISOLA_LOG` (e.g. `debug`,
    /// `warn,isola=info`; default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "ISOLA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The NATS server of a cluster, with JetStream (e.g.
    /// nats://127.0.0.1:4222); without it, the node runs alone. Every node
    /// of a cluster needs the same node key (--node-key-file).
    #[arg(long, env = "ISOLA_NATS")]
    pub nats: Option<String>,
    /// A NATS credentials file (.creds: JWT and NKey seed) for --nats.
    #[arg(long, env = "ISOLA_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// What this node does in a cluster: `gateway` answers HTTP and sends
    /// invocations to the workers, `worker` runs them (no HTTP), `all` both.
    #[arg(long, value_enum, default_value_t = Role::All, env = "ISOLA_ROLE")]
    pub role: Role,
}

/// How `isola serve` writes its log.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Starts the node's log on stderr: `ISOLA_LOG` says what (default `info`),
/// plus each request with `access_log`.
fn start_log(format: LogFormat, access_log: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        EnvFilter::try_from_env("ISOLA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let access = if access_log {
        "isola::access=info"
    } else {
        "isola::access=off"
    };
    if let Ok(directive) = access.parse() {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The admin token's hash: from `--token`, from storage, or a new token
/// printed once.
async fn token_hash(
    registry: &dyn Registry,
    token: Option<String>,
    addr: SocketAddr,
) -> anyhow::Result<String> {
    if let Some(token) = token {
        let hash = hash_token(&token);
        registry.set_setting(TOKEN_HASH_KEY, &hash).await?;
        return Ok(hash);
    }
    if let Some(hash) = registry.setting(TOKEN_HASH_KEY).await? {
        return Ok(hash);
    }
    let token = new_token();
    let hash = hash_token(&token);
    registry.set_setting(TOKEN_HASH_KEY, &hash).await?;
    eprintln!("Admin token (shown once, stored hashed): {token}");
    eprintln!("  isola login --server http://{addr} --token {token}");
    Ok(hash)
}

/// Files of the data directory that only the node's user may read.
const PRIVATE_FILES: [&str; 10] = [
    "isola.db",
    "isola.db-wal",
    "isola.db-shm",
    "kv.db",
    "kv.db-wal",
    "kv.db-shm",
    "kv-cluster.db",
    "kv-cluster.db-wal",
    "kv-cluster.db-shm",
    "node.key",
];

/// Makes the data directory private: everything created from now on is
/// 0600/0700 (umask), and an existing directory and its files are
/// tightened.
fn private_data_dir(data: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // SAFETY: umask only sets this process's file-creation mask.
        unsafe { libc::umask(0o077) };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .with_context(|| format!("creating {}", data.display()))?;
        let private = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("making {} private", path.display()))
        };
        private(data, 0o700)?;
        for name in PRIVATE_FILES {
            let path = data.join(name);
            if path.exists() {
                private(&path, 0o600)?;
            }
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    Ok(())
}

/// The node key: read from its file, or created there, unless the
/// database already holds secrets sealed with a key that is now missing.
fn node_key(path: &Path, db: &Path) -> anyhow::Result<NodeKey> {
    if path.exists() {
        return Ok(NodeKey::load(path)?);
    }
    if isola_store::database_is_sealed(db)? {
        anyhow::bail!(
            "the node key {} is missing, and the secrets in {} were sealed with it: \
             restore the key file (or point --node-key-file at it); nothing was changed",
            path.display(),
            db.display()
        );
    }
    Ok(NodeKey::create(path)?)
}

fn server_config(args: &ServeArgs, token_hash: String) -> ServerConfig {
    ServerConfig {
        token_hash,
        metrics_token_hash: args.metrics_token.as_deref().map(hash_token),
        base_domain: args.base_domain.clone(),
        max_request_bytes: args.max_request_mb << 20,
        max_response_bytes: args.max_response_mb << 20,
        max_record_queue_bytes: args.record_queue_mb << 20,
        max_websockets: args.max_websockets,
        max_websocket_buffer_mb: args.websocket_buffer_mb,
        retention: Some(Retention {
            max_age: Duration::from_secs(args.retention_hours.saturating_mul(3600)),
            max_records: args.retention_max_records,
            max_log_lines: args.retention_max_log_lines,
        }),
        ..ServerConfig::default()
    }
}

/// Runs `isola serve` until Ctrl-C or SIGTERM.
pub async fn execute(args: ServeArgs) -> anyhow::Result<crate::ExitStatus> {
    start_log(args.log_format, args.access_log);
    let cluster =
        cluster::Cluster::join(args.nats.as_deref(), args.nats_creds.as_deref(), args.role).await?;
    private_data_dir(&args.data)?;
    let db = args.data.join("isola.db");
    let key_file = args
        .node_key_file
        .clone()
        .unwrap_or_else(|| args.data.join("node.key"));
    let key = node_key(&key_file, &db)?;
    let embedded: Arc<dyn Registry> = Arc::new(
        SqliteRegistry::open(&db, key.clone())
            .with_context(|| format!("opening {}", db.display()))?,
    );
    let registry = match &cluster {
        Some(cluster) => cluster.registry(key, embedded).await?,
        None => embedded,
    };
    // Bound before a token is made: a busy port must not use up the one
    // showing of a new token.
    let listener = match args.role.serves_http() {
        true => Some(
            crate::serving::listen(args.addr)
                .with_context(|| format!("listening on {}", args.addr))?,
        ),
        false => None,
    };
    let kv = match &cluster {
        Some(cluster) => cluster.kv(&args.data).await?,
        None => embedded_kv(&args.data)?,
    };
    let mut executor_config = ExecutorConfig {
        kv: Some(kv.clone()),
        ..ExecutorConfig::default()
    };
    if let Some(workers) = args.workers {
        executor_config.workers = workers;
    }
    let executor = Arc::new(Executor::new(executor_config));
    let local = local_invoker(&args, &executor, &kv)?;
    // One signal stops everything at once: the worker leaves the queue
    // group while the HTTP side drains.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    if let Some(cluster) = &cluster {
        cluster.start_assigner(stopped.clone()).await?;
    }
    let worker = match cluster.as_ref().filter(|_| args.role.runs_invocations()) {
        Some(cluster) => Some(
            cluster
                .start_worker(local.clone(), registry.clone(), stopped.clone())
                .await?,
        ),
        None => None,
    };
    let served = match listener {
        Some(listener) => {
            let invoker = match &cluster {
                Some(cluster) => {
                    if !args.role.runs_invocations() {
                        cluster.heartbeat(Default::default(), None, stopped.clone());
                    }
                    cluster.gateway_invoker(local).await?
                }
                None => local,
            };
            let stop = until_stopped(stopped);
            serve_http(&args, listener, registry, invoker, kv, &executor, stop).await
        }
        None => {
            eprintln!("isola worker: no HTTP (data in {})", args.data.display());
            let mut worker = worker.expect("a worker-only node runs invocations");
            tokio::select! {
                () = until_stopped(stopped) => {}
                _ = &mut worker => anyhow::bail!("the worker stopped taking invocations (see the errors above)"),
            }
            let _ = worker.await;
            return Ok(crate::ExitStatus::Success);
        }
    };
    // Invocations under way on this worker finish before the node exits.
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    served?;
    Ok(crate::ExitStatus::Success)
}

/// This node's own runtimes: JavaScript on `executor`, and Wasm.
fn local_invoker(
    args: &ServeArgs,
    executor: &Arc<Executor>,
    kv: &Arc<dyn isola_kv::KvStore>,
) -> anyhow::Result<Arc<dyn isola_core::Invoker>> {
    // Compiled Wasm modules are kept in the data directory across restarts.
    let wasm: Arc<dyn isola_core::Invoker> = Arc::new(
        isola_runtime_wasm::WasmRuntime::new()?
            .with_cache(args.data.join("wasm-cache"))?
            .with_compiler_process(isola_runtime_wasm::compile::CompilerProcess {
                program: std::env::current_exe().context("finding this program")?,
                args: vec!["__wasm-compile".into()],
                cpu: Duration::from_secs(args.wasm_compile_cpu_s),
                memory_bytes: args.wasm_compile_memory_mb << 20,
            })
            .with_kv(kv.clone())
            .with_admission(executor.admission()),
    );
    Ok(Arc::new(isola_core::Dispatch::new(
        executor.clone(),
        Some(wasm),
    )))
}

/// Serves the API and function traffic on `listener` until Ctrl-C or
/// SIGTERM, then writes the records still queued.
async fn serve_http(
    args: &ServeArgs,
    listener: std::net::TcpListener,
    registry: Arc<dyn Registry>,
    invoker: Arc<dyn isola_core::Invoker>,
    kv: Arc<dyn isola_kv::KvStore>,
    executor: &Executor,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let token_hash = token_hash(&*registry, args.token.clone(), listener.local_addr()?).await?;
    let config = server_config(args, token_hash);
    let node = isola_api::Node::new(config, registry, invoker, Some(kv));
    eprintln!(
        "isola listening on http://{} (data in {})",
        listener.local_addr()?,
        args.data.display()
    );
    let served =
        crate::serving::serve_on_workers(executor, listener, node.worker_router(), stop).await;
    // The records still queued are written whichever way serving ended.
    node.shutdown().await;
    served
}

/// Resolves once `stopped` turns true (or its sender is gone).
async fn until_stopped(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The node's own KV (no cluster), in `data`, with its expired keys
/// purged every minute.
fn embedded_kv(data: &Path) -> anyhow::Result<Arc<dyn isola_kv::KvStore>> {
    let path = data.join("kv.db");
    let kv = isola_kv::SqliteKv::open(&path, isola_kv::KvLimits::default())
        .with_context(|| format!("opening {}", path.display()))?;
    let purged = kv.clone();
    purge_expired_keys(move || {
        let kv = purged.clone();
        async move { kv.purge_expired().await }
    });
    Ok(Arc::new(kv))
}

/// Deletes expired KV keys every minute with `purge`, so they do not keep
/// their space.
pub(crate) fn purge_expired_keys<F, P>(purge: F)
where
    F: Fn() -> P + Send + 'static,
    P: std::future::Future<Output = isola_kv::Result<usize>> + Send,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            if let Err(error) = purge().await {
                tracing::warn!(%error, "could not purge expired KV keys");
            }
        }
    });
}
