//! The executor: a fixed set of worker threads running invocations in
//! isolates, fed by one shared queue and one queue per worker.
//!
//! Each worker thread has a current-thread tokio runtime with a `LocalSet`
//! (isolates are `!Send` and never leave their thread), its own warm pool,
//! and its slot in the CPU watchdog. A worker takes a new job whenever it is
//! not busy running JavaScript and has fewer than `max_in_flight_per_worker`
//! invocations under way, so invocations awaiting timers or I/O do not hold
//! a thread, and a thread busy with CPU work leaves new jobs to the others.
//!
//! Each function version has a home worker (by hash of its id): while that
//! worker runs fewer than [`HOME_DEPTH`] invocations, the job goes to its
//! own queue, where its warm isolate most likely waits; otherwise to the
//! shared queue, to whichever worker is free first (where it may start
//! cold).
//!
//! A server can run *on* the worker threads ([`Executor::serve_on_workers`]):
//! an invocation asked for on a worker thread then runs on that same thread,
//! with no queue and no thread switch, unless its function is quarantined
//! or the worker is at its limit of invocations in flight.

mod worker;

use worker::WorkerSetup;

use crate::admission::{physical_memory_mb, Admission, Admitted, Quarantine};
use crate::cpu::CpuWatchdog;
use crate::isolate::{FunctionIsolate, ThreadContext};
use crate::loader::CodeCache;
use crate::platform::init_platform;
use crate::pool::{PoolLimits, Pooled, WarmPool};
use crate::typescript::TranspileCache;
use isola_core::{
    BoxFuture, ErrorCode, FunctionError, FunctionSource, Invocation, InvocationMetrics, Invoker,
    InvokerStats, Outcome,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How the executor is sized, and what functions can reach.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Worker threads; default: one per core.
    pub workers: usize,
    /// Most warm (idle) isolates kept across all workers.
    pub max_warm_isolates: usize,
    /// Most memory held by warm isolates across all workers, in MiB.
    pub max_warm_memory_mb: usize,
    /// Most invocations one worker runs at once (the rest wait in the queue).
    pub max_in_flight_per_worker: usize,
    /// Most invocations waiting in the queue before new ones are refused.
    pub queue_capacity: usize,
    /// Memory the invocations under way may be allowed together, in MiB:
    /// each one reserves its `memory_mb` until it ends, and one that does
    /// not fit is refused as `unavailable` (HTTP 503) rather than queued.
    /// Default: three quarters of the machine's memory.
    pub max_admitted_memory_mb: usize,
    /// KV storage for functions with a KV binding (none: `env.KV` is absent).
    pub kv: Option<Arc<dyn isola_kv::KvStore>>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_warm_isolates: 2000,
            // An eighth of the machine (4 GiB at most) for idle isolates.
            max_warm_memory_mb: (physical_memory_mb() / 8).clamp(64, 4096),
            max_in_flight_per_worker: 256,
            queue_capacity: 10_000,
            // Three quarters of the machine, less what warm isolates may hold.
            max_admitted_memory_mb: (physical_memory_mb() / 4 * 3)
                .saturating_sub((physical_memory_mb() / 8).clamp(64, 4096))
                .max(256),
            kv: None,
        }
    }
}

/// Counters shared by the workers.
#[derive(Debug, Default)]
pub struct ExecutorStats {
    /// Warm isolates held now.
    pub warm_isolates: AtomicUsize,
    /// Memory held by warm isolates now, in bytes.
    pub warm_memory: AtomicUsize,
    /// Isolates created so far.
    pub cold_starts: AtomicU64,
    /// Invocations finished so far.
    pub invocations: AtomicU64,
    /// Invocations run on the very thread that asked for them (a server
    /// running on the workers), with no queue and no thread switch.
    pub in_place: AtomicU64,
}

/// Work for a worker thread.
enum Job {
    /// Run an invocation.
    Invoke {
        invocation: Invocation,
        reply: oneshot::Sender<Outcome>,
        /// Its share of the node's memory, held until the worker is done.
        admitted: Admitted,
    },
    /// Run a request for a WebSocket in its function's host (told apart
    /// once, when the job is made).
    Upgrade {
        invocation: Invocation,
        reply: oneshot::Sender<Outcome>,
        admitted: Admitted,
    },
    /// Load a function version and keep it warm.
    Prepare {
        function: Arc<FunctionSource>,
        reply: oneshot::Sender<Result<(), FunctionError>>,
    },
}

impl Job {
    fn is_upgrade(&self) -> bool {
        matches!(self, Job::Upgrade { .. })
    }

    fn function_id(&self) -> &str {
        match self {
            Job::Invoke { invocation, .. } | Job::Upgrade { invocation, .. } => {
                &invocation.function.id
            }
            Job::Prepare { function, .. } => &function.id,
        }
    }
}

/// A future to run on a worker thread, made there (it need not be `Send`).
type LocalTask =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send>;

enum Control {
    Evict(String),
    /// Run a task beside the invocations, e.g. an HTTP server.
    Spawn(LocalTask),
}

/// Which thread runs something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Worker(usize),
    Quarantine,
}

/// Where each function version's WebSocket host runs.
#[derive(Clone, Default)]
struct Hosted(Arc<std::sync::Mutex<std::collections::HashMap<String, Place>>>);

impl Hosted {
    fn get(&self, id: &str) -> Option<Place> {
        self.0.lock().unwrap().get(id).copied()
    }

    fn set(&self, id: &str, place: Option<Place>) {
        let mut hosted = self.0.lock().unwrap();
        match place {
            Some(place) => hosted.insert(id.to_string(), place),
            None => hosted.remove(id),
        };
    }
}

/// Tells executors apart, so a worker thread runs locally only the
/// invocations of its own executor.
static NEXT_EXECUTOR: AtomicU64 = AtomicU64::new(1);

/// The executor's side of a worker thread.
struct WorkerHandle {
    jobs: async_channel::Sender<Job>,
    control: mpsc::UnboundedSender<Control>,
    in_flight: Arc<AtomicUsize>,
}

/// Memory an idle isolate may hold before its garbage is collected on its
/// way back to the pool.
const TRIM_ABOVE: usize = 8 << 20;

/// How long past an invocation's wall-clock limit its caller waits for the
/// worker's answer.
const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What every worker thread of an executor shares.
struct Common {
    executor: u64,
    quarantined: Arc<Quarantine>,
    hosted: Hosted,
    watchdog: CpuWatchdog,
    code_cache: Arc<CodeCache>,
    transpiled: Arc<TranspileCache>,
    stats: Arc<ExecutorStats>,
    pool_limits: PoolLimits,
    config: ExecutorConfig,
}

impl Common {
    /// Starts a worker thread taking jobs from its own queue and `shared`;
    /// a `quarantine` worker runs at a lower OS priority.
    fn spawn(
        &self,
        index: usize,
        name: String,
        shared: Option<async_channel::Receiver<Job>>,
        quarantine: bool,
    ) -> (WorkerHandle, std::thread::JoinHandle<()>) {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (own_jobs, own_queue) = async_channel::bounded(self.config.queue_capacity.max(1));
        // A worker without shared work (the quarantine one) reads its own
        // queue twice over, and stops when that closes.
        let shared = shared.unwrap_or_else(|| own_queue.clone());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let worker = WorkerSetup {
            executor: self.executor,
            quarantined: self.quarantined.clone(),
            hosted: self.hosted.clone(),
            place: if quarantine {
                Place::Quarantine
            } else {
                Place::Worker(index)
            },
            queue: shared,
            own_queue,
            in_flight: in_flight.clone(),
            control: control_rx,
            watchdog: self.watchdog.clone(),
            code_cache: self.code_cache.clone(),
            transpiled: self.transpiled.clone(),
            kv: self.config.kv.clone(),
            pool_limits: self.pool_limits,
            max_in_flight: self.config.max_in_flight_per_worker.max(1),
            stats: self.stats.clone(),
            quarantine,
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(8 << 20)
            .spawn(move || worker.run())
            .expect("spawning a worker thread");
        let handle = WorkerHandle {
            jobs: own_jobs,
            control,
            in_flight,
        };
        (handle, thread)
    }
}

/// Runs invocations on worker threads; see the module docs.
pub struct Executor {
    id: u64,
    jobs: async_channel::Sender<Job>,
    admission: Arc<Admission>,
    /// Functions that broke a limit recently, and the worker they run on.
    quarantined: Arc<Quarantine>,
    /// Where each function version's WebSocket host runs, if it has one.
    hosted: Hosted,
    quarantine: WorkerHandle,
    workers: Vec<WorkerHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stats: Arc<ExecutorStats>,
    code_cache: Arc<CodeCache>,
}

impl Executor {
    /// Starts the worker threads. Initialises V8 if [`init_platform`] was not
    /// called yet, but that should happen first thing in `main`.
    pub fn new(config: ExecutorConfig) -> Self {
        init_platform();
        let workers = config.workers.max(1);
        let (jobs, queue) = async_channel::bounded(config.queue_capacity.max(1));
        let id = NEXT_EXECUTOR.fetch_add(1, Ordering::Relaxed);
        let quarantined = Arc::new(Quarantine::default());
        let hosted = Hosted::default();
        let common = Common {
            executor: id,
            quarantined: quarantined.clone(),
            hosted: hosted.clone(),
            watchdog: CpuWatchdog::start(),
            code_cache: Arc::new(CodeCache::default()),
            transpiled: Arc::new(TranspileCache::default()),
            stats: Arc::new(ExecutorStats::default()),
            pool_limits: PoolLimits {
                max_instances: config.max_warm_isolates.div_ceil(workers),
                max_memory: (config.max_warm_memory_mb << 20) / workers,
            },
            config,
        };
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..workers {
            let (handle, thread) = common.spawn(
                index,
                format!("isola-worker-{index}"),
                Some(queue.clone()),
                false,
            );
            handles.push(handle);
            threads.push(thread);
        }
        let (quarantine, thread) = common.spawn(0, "isola-quarantine".into(), None, true);
        threads.push(thread);
        Self {
            id,
            jobs,
            admission: Arc::new(Admission::new(common.config.max_admitted_memory_mb)),
            quarantined,
            hosted,
            quarantine,
            workers: handles,
            threads,
            stats: common.stats.clone(),
            code_cache: common.code_cache.clone(),
        }
    }

    /// The node's memory admission, to share with other runtimes.
    pub fn admission(&self) -> Arc<Admission> {
        self.admission.clone()
    }

    /// Runs one invocation to its end.
    pub async fn run(&self, invocation: Invocation) -> Outcome {
        let timeout = invocation.function.limits.timeout();
        let function = invocation.function.clone();
        let Some(admitted) = self
            .admission
            .admit(invocation.function.limits.memory_mb as usize)
        else {
            return Outcome::failed(FunctionError::new(
                ErrorCode::Unavailable,
                "the node is at capacity: the memory of the invocations under way is fully promised; retry shortly",
            ));
        };
        let (reply, outcome) = oneshot::channel();
        let job = if worker::is_upgrade(&invocation) {
            Job::Upgrade {
                invocation,
                reply,
                admitted,
            }
        } else {
            Job::Invoke {
                invocation,
                reply,
                admitted,
            }
        };
        // A WebSocket request goes to its function's home worker, where the
        // isolate holding the function's connections is.
        let job = if self.quarantined.holds(&function.id) || job.is_upgrade() {
            Some(job)
        } else {
            worker::run_here(self.id, job)
        };
        // Another worker answers by the wall deadline; should it not (a
        // thread stuck in native code), the caller is not kept waiting.
        // Run here, the answer comes from this very thread.
        let answer = match job {
            None => outcome.await.ok(),
            Some(job) => {
                if let Err(error) = self.submit(job) {
                    return Outcome::failed(error);
                }
                match tokio::time::timeout(timeout + ANSWER_GRACE, outcome).await {
                    Ok(answer) => answer.ok(),
                    Err(_) => Some(Outcome::failed(FunctionError::new(
                        ErrorCode::WallTimeout,
                        "the invocation did not end by its wall-clock limit",
                    ))),
                }
            }
        };
        let outcome = answer.unwrap_or_else(|| {
            Outcome::failed(FunctionError::new(
                ErrorCode::Internal,
                "the worker running the invocation stopped",
            ))
        });
        if Quarantine::breaks_limit(&outcome) {
            self.quarantined.admit(&function.id);
        }
        outcome
    }

    /// Loads a function version on a worker and keeps it warm; see
    /// [`Invoker::prepare`].
    pub async fn prepare_function(
        &self,
        function: Arc<FunctionSource>,
    ) -> Result<(), FunctionError> {
        let (reply, done) = oneshot::channel();
        self.submit(Job::Prepare { function, reply })?;
        done.await.unwrap_or_else(|_| {
            Err(FunctionError::new(
                ErrorCode::Internal,
                "the worker preparing the function stopped",
            ))
        })
    }

    /// Queues a job on the home worker of its function when that worker is
    /// idle (always, for a WebSocket request), else on the shared queue.
    fn submit(&self, job: Job) -> Result<(), FunctionError> {
        let home = &self.workers[home_worker(job.function_id(), self.workers.len())];
        // A WebSocket request goes where its function's connections are, so
        // that they all see each other (even once it is quarantined).
        let host = job
            .is_upgrade()
            .then(|| self.hosted.get(job.function_id()))
            .flatten();
        let queue = if let Some(place) = host {
            match place {
                Place::Worker(index) => &self.workers[index].jobs,
                Place::Quarantine => &self.quarantine.jobs,
            }
        } else if self.quarantined.holds(job.function_id()) {
            &self.quarantine.jobs
        } else if job.is_upgrade() || home.in_flight.load(Ordering::Relaxed) < HOME_DEPTH {
            &home.jobs
        } else {
            &self.jobs
        };
        queue.try_send(job).map_err(|error| {
            let message = match error {
                async_channel::TrySendError::Full(_) => {
                    "the node is overloaded: its invocation queue is full"
                }
                async_channel::TrySendError::Closed(_) => "the executor is shutting down",
            };
            FunctionError::new(ErrorCode::Unavailable, message)
        })
    }

    /// Runs a task on each worker thread (not the quarantine one), beside
    /// its invocations: `make(index)` is called on the thread and its
    /// future spawned there. Invocations it asks for run on that thread.
    /// The returned future ends when every task has ended (or its worker
    /// stopped).
    pub fn serve_on_workers<F, Fut>(&self, make: F) -> impl std::future::Future<Output = ()>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let make = Arc::new(make);
        let mut ended = Vec::new();
        for (index, worker) in self.workers.iter().enumerate() {
            let (done, end) = oneshot::channel::<()>();
            let make = make.clone();
            let task: LocalTask = Box::new(move || {
                Box::pin(async move {
                    make(index).await;
                    let _ = done.send(());
                })
            });
            if worker.control.send(Control::Spawn(task)).is_ok() {
                ended.push(end);
            }
        }
        async move {
            for end in ended {
                let _ = end.await;
            }
        }
    }

    /// How many worker threads run invocations (and can serve).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Modules whose compiled code is cached for the next cold start.
    pub fn cached_modules(&self) -> usize {
        self.code_cache.len()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &ExecutorStats {
        &self.stats
    }

    /// Stops taking invocations, lets those under way finish, and waits for
    /// the worker threads to end.
    pub fn shutdown(mut self) {
        self.close();
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

impl Executor {
    fn close(&self) {
        self.jobs.close();
        self.quarantine.jobs.close();
        for worker in &self.workers {
            worker.jobs.close();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.close();
    }
}

/// The worker a function version prefers, so that its warm isolates are found.
/// Invocations a home worker may be running for a job of its function to
/// still go to it: a few short ones ahead cost less than a cold start on
/// another worker (tens of times one warm invocation).
const HOME_DEPTH: usize = 8;

fn home_worker(function_id: &str, workers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    function_id.hash(&mut hasher);
    (hasher.finish() % workers as u64) as usize
}

impl Invoker for Executor {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        Box::pin(self.run(invocation))
    }

    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        Box::pin(self.prepare_function(function))
    }

    fn stats(&self) -> InvokerStats {
        InvokerStats {
            warm_instances: self.stats.warm_isolates.load(Ordering::Relaxed) as u64,
            warm_memory_bytes: self.stats.warm_memory.load(Ordering::Relaxed) as u64,
            cold_starts: self.stats.cold_starts.load(Ordering::Relaxed),
        }
    }

    fn evict(&self, function_id: &str) {
        for worker in self.workers.iter().chain([&self.quarantine]) {
            let _ = worker.control.send(Control::Evict(function_id.to_string()));
        }
    }
}
