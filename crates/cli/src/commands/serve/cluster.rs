//! `isola serve --nats URL --role gateway|worker|all`: a node of a cluster.
//!
//! A gateway answers HTTP (the API and function traffic) and sends each
//! invocation to the workers' queue group; it still checks deployments
//! and runs WebSocket upgrades on its own runtimes (a connection cannot
//! leave the node that accepted it). A worker takes invocations from the
//! queue group and runs them; it serves no HTTP. `all` is both.
//!
//! Functions, deployments and settings are in JetStream, shared by every
//! node (`isola_cluster::JetStreamRegistry`); each node keeps its own data
//! directory for the records of what it served and its Wasm cache. The
//! nodes share one node key (`--node-key-file`), which opens deployment
//! secrets: a node with another key refuses to start.

use isola_cluster::async_nats;
use isola_cluster::{JetStreamRegistry, NatsInvoker, RegistryDeployments};
use isola_core::Invoker;
use isola_store::{NodeKey, Registry};
use std::sync::Arc;

/// The setting holding a keyed digest of the cluster's node key.
const KEY_CHECK: &str = "node_key_check";

/// What a node of a cluster does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Answer HTTP; invocations run on the workers.
    Gateway,
    /// Run invocations taken from the cluster; no HTTP.
    Worker,
    /// Both.
    All,
}

impl Role {
    pub fn serves_http(self) -> bool {
        self != Role::Worker
    }

    pub fn runs_invocations(self) -> bool {
        self != Role::Gateway
    }

    fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Worker => "worker",
            Role::All => "all",
        }
    }
}

/// This node's place in a cluster: its connection and role.
pub struct Cluster {
    client: async_nats::Client,
    /// This node's id among the members.
    id: String,
    role: Role,
    url: String,
}

impl Cluster {
    /// Joins the cluster whose NATS server is `nats` (none: this node runs
    /// alone, which only `--role all` may).
    pub async fn join(
        nats: Option<&str>,
        creds: Option<&std::path::Path>,
        role: Role,
    ) -> anyhow::Result<Option<Self>> {
        let Some(url) = nats else {
            if role != Role::All {
                anyhow::bail!(
                    "--role {} needs --nats (the cluster's NATS server, e.g. nats://127.0.0.1:4222)",
                    role.name()
                );
            }
            return Ok(None);
        };
        let name = format!("isola {} {}", role.name(), std::process::id());
        let client = isola_cluster::connect(url, &name, creds)
            .await
            .map_err(|error| anyhow::anyhow!("could not reach NATS at {url}: {error}"))?;
        Ok(Some(Self {
            id: isola_cluster::members::new_node_id(&client),
            client,
            role,
            url: url.to_string(),
        }))
    }

    /// The cluster's registry, with this node's records kept in `records`.
    /// Fails if the node's key is not the one the cluster's secrets are
    /// sealed with.
    pub async fn registry(
        &self,
        key: NodeKey,
        records: Arc<dyn Registry>,
    ) -> anyhow::Result<Arc<dyn Registry>> {
        // Keyed: it tells whether two keys are the same, not what they are.
        let check = key.digest("isola-cluster", "node-key-check");
        let registry = JetStreamRegistry::open(self.client.clone(), key, records)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "could not open the cluster's registry on {} (is JetStream on? nats-server -js): {error}",
                    self.url
                )
            })?;
        if self.role.serves_http() {
            // Every gateway keeps the records of the whole cluster.
            registry.receive_records().await?;
        }
        match registry.setting(KEY_CHECK).await? {
            Some(known) if known != check => anyhow::bail!(
                "this node's key is not the cluster's: give every node a copy of the same key file (--node-key-file)"
            ),
            Some(_) => {}
            None => registry.set_setting(KEY_CHECK, &check).await?,
        }
        Ok(Arc::new(registry))
    }

    /// The cluster's function KV (`isola_cluster::JetStreamKv`), with this
    /// node's copies of the namespaces it uses in `data/kv-cluster.db`.
    /// The copies are a cache of the cluster's log: started afresh.
    pub async fn kv(&self, data: &std::path::Path) -> anyhow::Result<Arc<dyn isola_kv::KvStore>> {
        let path = data.join("kv-cluster.db");
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            match std::fs::remove_file(&file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    anyhow::bail!("could not remove {file}: {error}")
                }
                _ => {}
            }
        }
        let replica = isola_kv::Replica::open(&path, isola_kv::KvLimits::default())
            .map_err(|error| anyhow::anyhow!("opening {}: {error}", path.display()))?;
        let kv = isola_cluster::JetStreamKv::open(
            self.client.clone(),
            replica.clone(),
            isola_kv::KvLimits::default(),
        )
        .await
        .map_err(|error| {
            anyhow::anyhow!("could not open the cluster's KV on {}: {error}", self.url)
        })?;
        super::purge_expired_keys(move || {
            let replica = replica.clone();
            async move { replica.purge_expired().await }
        });
        Ok(Arc::new(kv))
    }

    /// The invoker HTTP requests use: the workers, through NATS (each
    /// function on its slice of the members), with `local` for deploy
    /// checks and WebSocket upgrades.
    pub async fn gateway_invoker(
        &self,
        local: Arc<dyn Invoker>,
    ) -> anyhow::Result<Arc<dyn Invoker>> {
        let members = isola_cluster::members::Members::follow(&self.client)
            .await
            .map_err(|error| anyhow::anyhow!("could not follow the cluster's members: {error}"))?;
        let assignments = isola_cluster::assigner::Assignments::follow(&self.client)
            .await
            .map_err(|error| {
                anyhow::anyhow!("could not follow the cluster's assignment: {error}")
            })?;
        Ok(Arc::new(
            NatsInvoker::new(self.client.clone())
                .with_members(members)
                .with_assignments(assignments)
                .with_local(local),
        ))
    }

    /// Says every second that this node is alive (and how many invocations
    /// `in_flight` counts, and what it ran per slice, `load`), until `stop`
    /// turns true.
    pub fn heartbeat(
        &self,
        in_flight: Arc<std::sync::atomic::AtomicU32>,
        load: Option<Arc<isola_cluster::assigner::SliceLoad>>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let heartbeat = isola_cluster::members::Heartbeat {
            id: self.id.clone(),
            runs_invocations: self.role.runs_invocations(),
            serves_http: self.role.serves_http(),
            in_flight: 0,
            leaving: false,
            load: Vec::new(),
        };
        let report = move || {
            let running = in_flight.load(std::sync::atomic::Ordering::Relaxed);
            (running, load.as_ref().map(|l| l.take()).unwrap_or_default())
        };
        isola_cluster::members::beat(self.client.clone(), heartbeat, report, stop)
    }

    /// Runs this node's candidate for the cluster's assigner (one node at
    /// a time assigns the functions' slices to workers), until `stop`.
    pub async fn start_assigner(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let members = isola_cluster::members::Members::follow(&self.client)
            .await
            .map_err(|error| anyhow::anyhow!("could not follow the cluster's members: {error}"))?;
        isola_cluster::assigner::run_assigner(self.client.clone(), self.id.clone(), members, stop);
        Ok(())
    }

    /// Joins the workers and runs the invocations the cluster sends this
    /// node, on `local`, until `stop` turns true; then finishes what it
    /// took. Ready (and said so) when this returns.
    pub async fn start_worker(
        &self,
        local: Arc<dyn Invoker>,
        registry: Arc<dyn Registry>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let queue = isola_cluster::WorkerQueue::join(self.client.clone(), &self.id)
            .await
            .map_err(|error| anyhow::anyhow!("could not join the cluster's workers: {error}"))?;
        self.heartbeat(queue.in_flight(), Some(queue.load()), stop.clone());
        let deployments = RegistryDeployments::new(registry);
        // Queued (asynchronous) invocations too, until the same stop.
        let mut queue_stop = stop.clone();
        let (client, invoker, queued) = (self.client.clone(), local.clone(), deployments.clone());
        tokio::spawn(async move {
            let stopped = async move {
                let _ = queue_stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = isola_cluster::serve_queued(client, invoker, queued, stopped).await
            {
                tracing::error!(%error, "could not run queued invocations");
            }
        });
        eprintln!(
            "isola {}: running invocations from {}",
            self.role.name(),
            self.url
        );
        Ok(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            isola_cluster::serve_worker(queue, local, deployments, stopped).await;
        }))
    }
}
