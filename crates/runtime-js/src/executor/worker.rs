//! A worker thread: its tokio runtime and warm pool, taking jobs from its
//! own queue and the shared one, and running each invocation to its end
//! (and what it left behind) before the isolate goes back to the pool.

use super::*;

#[path = "sockets.rs"]
mod sockets;
use sockets::{Hosts, UpgradeJob};

impl Pooled for FunctionIsolate {
    fn key(&self) -> &str {
        &self.source().id
    }

    fn memory(&self) -> usize {
        self.memory_in_use()
    }
}

/// What a worker thread starts with.
pub(super) struct WorkerSetup {
    pub(super) executor: u64,
    pub(super) quarantined: Arc<Quarantine>,
    pub(super) hosted: Hosted,
    pub(super) place: Place,
    pub(super) queue: async_channel::Receiver<Job>,
    pub(super) own_queue: async_channel::Receiver<Job>,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    pub(super) watchdog: CpuWatchdog,
    pub(super) code_cache: Arc<CodeCache>,
    pub(super) transpiled: Arc<TranspileCache>,
    pub(super) kv: Option<Arc<dyn isola_kv::KvStore>>,
    pub(super) pool_limits: PoolLimits,
    pub(super) max_in_flight: usize,
    pub(super) stats: Arc<ExecutorStats>,
    /// Whether this is the quarantine worker (lower priority).
    pub(super) quarantine: bool,
}

/// A worker thread's state, shared by its in-flight invocations.
pub(super) struct Worker {
    thread: ThreadContext,
    pool: RefCell<WarmPool<FunctionIsolate>>,
    stats: Arc<ExecutorStats>,
    in_flight: Arc<AtomicUsize>,
    /// Invocations this worker may run at once.
    slots: Arc<Semaphore>,
    /// Invocations started on this thread by its own callers that have not
    /// begun to run yet.
    waiting_in_place: Cell<usize>,
    /// Recent CPU time per invocation of each function run here, in µs
    /// (a moving average).
    cpu_estimates: RefCell<std::collections::HashMap<String, u64>>,
    /// The isolates holding WebSocket connections, by function version.
    hosts: Hosts,
    /// Functions that broke a limit recently (a WebSocket listener too).
    quarantined: Arc<Quarantine>,
    /// Where WebSocket hosts run (this worker's included), and this worker.
    hosted: Hosted,
    place: Place,
}

impl Worker {
    /// How many invocations of `function` may wait to begin in place: none
    /// known costs as much as the budget allows.
    fn may_wait_in_place(&self, function: &str) -> usize {
        let estimate = self.cpu_estimates.borrow().get(function).copied();
        match estimate {
            None => MIN_WAITING_IN_PLACE,
            Some(cpu_us) => ((IN_PLACE_BUDGET_US / cpu_us.max(1)) as usize)
                .clamp(MIN_WAITING_IN_PLACE, MAX_WAITING_IN_PLACE),
        }
    }

    /// Folds an invocation's CPU time into its function's estimate.
    fn note_cpu(&self, function: &str, cpu_us: u64) {
        let mut estimates = self.cpu_estimates.borrow_mut();
        if let Some(estimate) = estimates.get_mut(function) {
            *estimate = (*estimate * 3 + cpu_us) / 4;
            return;
        }
        if estimates.len() >= CPU_ESTIMATES {
            estimates.clear();
        }
        estimates.insert(function.to_string(), cpu_us);
    }
}

/// How much work (by the CPU time recent invocations of the same function
/// took) may wait to begin on the worker thread that asked for it; past
/// it, the next invocations go to the shared queue, to whichever worker is
/// free first, so that one connection (an HTTP/2 one with many streams)
/// cannot pile work onto one thread while another idles.
const IN_PLACE_BUDGET_US: u64 = 2_000;

/// Invocations that may always wait in place, and most that ever may.
const MIN_WAITING_IN_PLACE: usize = 2;
const MAX_WAITING_IN_PLACE: usize = 32;

/// Functions whose CPU time a worker remembers (then it starts afresh).
const CPU_ESTIMATES: usize = 1024;

thread_local! {
    /// The worker running on this thread, and its executor's id.
    static HERE: RefCell<Option<(u64, Rc<Worker>)>> = const { RefCell::new(None) };
}

/// Starts `job` on this thread when it is a worker thread of executor
/// `executor` with a free slot; gives the job back otherwise.
pub(super) fn run_here(executor: u64, job: Job) -> Option<Job> {
    HERE.with(|here| {
        let here = here.borrow();
        let Some((_, worker)) = here.as_ref().filter(|(owner, _)| *owner == executor) else {
            return Some(job);
        };
        if worker.waiting_in_place.get() >= worker.may_wait_in_place(job.function_id()) {
            return Some(job);
        }
        match worker.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                worker.stats.in_place.fetch_add(1, Ordering::Relaxed);
                worker.start(job, permit, true);
                None
            }
            Err(_) => Some(job),
        }
    })
}

impl WorkerSetup {
    pub(super) fn run(self) {
        let quarantine = self.quarantine;
        if quarantine {
            crate::admission::lower_thread_priority();
        }
        let blocking = Arc::new(crate::cpu::BlockingClocks::default());
        let (started, stopped) = (blocking.clone(), blocking.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(move || {
                if quarantine {
                    crate::admission::lower_thread_priority();
                }
                started.thread_started()
            })
            .on_thread_stop(move || stopped.thread_stopped())
            .build()
            .expect("building a worker's tokio runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, self.serve(blocking));
    }

    async fn serve(mut self, blocking: Arc<crate::cpu::BlockingClocks>) {
        let worker = Rc::new(Worker {
            thread: ThreadContext {
                cpu_slot: self.watchdog.register_current_thread(),
                code_cache: self.code_cache.clone(),
                transpiled: self.transpiled.clone(),
                kv: self.kv.clone(),
                blocking,
            },
            pool: RefCell::new(WarmPool::new(self.pool_limits)),
            stats: self.stats.clone(),
            in_flight: self.in_flight.clone(),
            slots: Arc::new(Semaphore::new(self.max_in_flight)),
            waiting_in_place: Cell::new(0),
            cpu_estimates: RefCell::default(),
            hosts: Hosts::default(),
            quarantined: self.quarantined.clone(),
            hosted: self.hosted.clone(),
            place: self.place,
        });
        let slots = worker.slots.clone();
        if !self.quarantine {
            HERE.with(|here| *here.borrow_mut() = Some((self.executor, worker.clone())));
        }
        loop {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            tokio::select! {
                biased;
                Some(control) = self.control.recv() => match control {
                    Control::Evict(id) => worker.evict(&id),
                    Control::Spawn(task) => {
                        tokio::task::spawn_local(task());
                    }
                },
                Ok(job) = self.own_queue.recv() => worker.start(job, permit, false),
                job = self.queue.recv() => match job {
                    Ok(job) => worker.start(job, permit, false),
                    Err(_) => break,
                },
            }
        }
        // Let the invocations under way finish, then drop the warm isolates.
        let _all = slots.acquire_many(self.max_in_flight as u32).await;
        HERE.with(|here| here.borrow_mut().take());
        let idle = worker.pool.borrow_mut().clear();
        drop(idle);
    }
}

impl Worker {
    /// Starts a job as a task of this thread. One asked for on this thread
    /// (`in_place`) counts as waiting there until it begins to run.
    fn start(self: &Rc<Self>, job: Job, permit: OwnedSemaphorePermit, in_place: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if in_place {
            self.waiting_in_place.set(self.waiting_in_place.get() + 1);
        }
        let this = self.clone();
        tokio::task::spawn_local(async move {
            if in_place {
                this.waiting_in_place.set(this.waiting_in_place.get() - 1);
            }
            match job {
                Job::Upgrade {
                    invocation,
                    reply,
                    admitted,
                } => this.upgrade(UpgradeJob {
                    invocation,
                    reply,
                    held: Some((permit, admitted)),
                }),
                Job::Invoke {
                    invocation,
                    reply,
                    admitted,
                } => this.run_job(invocation, reply, (permit, admitted)).await,
                Job::Prepare { function, reply } => this.prepare(function, reply, permit).await,
            }
        });
    }

    async fn prepare(
        self: Rc<Self>,
        function: Arc<FunctionSource>,
        reply: oneshot::Sender<Result<(), FunctionError>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let result = match function.limits.validate() {
            Err(message) => Err(FunctionError::new(ErrorCode::InvalidInput, message)),
            Ok(()) => {
                let deadline = Instant::now() + function.limits.timeout();
                self.stats.cold_starts.fetch_add(1, Ordering::Relaxed);
                FunctionIsolate::create(function, &self.thread, deadline).await
            }
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let reply_result = result.as_ref().map(|_| ()).map_err(Clone::clone);
        if let Ok(isolate) = result {
            self.checkin(isolate);
        }
        let _ = reply.send(reply_result);
    }

    async fn run_job(
        self: Rc<Self>,
        invocation: Invocation,
        reply: oneshot::Sender<Outcome>,
        _held: (OwnedSemaphorePermit, Admitted),
    ) {
        if reply.is_closed() {
            // Its caller gave up while it waited in a queue.
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let started = Instant::now();
        let deadline = started + invocation.function.limits.timeout();
        let (outcome, isolate) = self.execute(&invocation, started, deadline).await;
        if !outcome.metrics.cold_start {
            // A cold start's module evaluation is not what the next one costs.
            self.note_cpu(&invocation.function.id, outcome.metrics.cpu_us);
        }
        // Answered: the dispatcher may send this function's next invocation here.
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let _ = reply.send(outcome);

        if let Some(mut isolate) = isolate {
            // Outbound WebSockets end with the invocation's response.
            isolate.close_outbound();
            isolate.drain(deadline).await;
            isolate.release_bodies();
            isolate.trim(TRIM_ABOVE);
            isolate.take_logs();
            if isolate.is_reusable() {
                self.checkin(isolate);
            }
        }
    }

    /// Runs an invocation in a warm or new isolate; returns the outcome and
    /// the isolate, if there is one to keep.
    async fn execute(
        &self,
        invocation: &Invocation,
        started: Instant,
        deadline: Instant,
    ) -> (Outcome, Option<FunctionIsolate>) {
        match self.obtain(&invocation.function, started, deadline).await {
            Ok((mut isolate, cold_start)) => {
                let outcome = run_in(&mut isolate, invocation, started, deadline, cold_start).await;
                (outcome, Some(isolate))
            }
            Err(outcome) => (outcome, None),
        }
    }

    /// A warm isolate of `source`, or a new one (`true`: a cold start); the
    /// outcome to answer with when there is none.
    pub(super) async fn obtain(
        &self,
        source: &Arc<FunctionSource>,
        started: Instant,
        deadline: Instant,
    ) -> Result<(FunctionIsolate, bool), Outcome> {
        if let Err(message) = source.limits.validate() {
            return Err(Outcome::failed(FunctionError::new(
                ErrorCode::InvalidInput,
                message,
            )));
        }
        if let Some(isolate) = self.checkout(&source.id) {
            return Ok((isolate, false));
        }
        self.stats.cold_starts.fetch_add(1, Ordering::Relaxed);
        match FunctionIsolate::create(source.clone(), &self.thread, deadline).await {
            Ok(isolate) => Ok((isolate, true)),
            Err(error) => {
                let mut outcome = Outcome::failed(error);
                outcome.metrics.cold_start = true;
                outcome.metrics.duration_us = started.elapsed().as_micros() as u64;
                Err(outcome)
            }
        }
    }

    pub(super) fn checkout(&self, key: &str) -> Option<FunctionIsolate> {
        let isolate = self.pool.borrow_mut().checkout(key)?;
        self.stats.warm_isolates.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .warm_memory
            .fetch_sub(isolate.memory(), Ordering::Relaxed);
        Some(isolate)
    }

    pub(super) fn checkin(&self, isolate: FunctionIsolate) {
        self.stats.warm_isolates.fetch_add(1, Ordering::Relaxed);
        self.stats
            .warm_memory
            .fetch_add(isolate.memory(), Ordering::Relaxed);
        let evicted = self.pool.borrow_mut().checkin(isolate);
        self.forget(evicted);
    }

    fn evict(&self, key: &str) {
        self.hosts.stop(key);
        let evicted = self.pool.borrow_mut().evict(key);
        self.forget(evicted);
    }

    fn forget(&self, evicted: Vec<FunctionIsolate>) {
        for isolate in evicted {
            self.stats.warm_isolates.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .warm_memory
                .fetch_sub(isolate.memory(), Ordering::Relaxed);
        }
    }
}

/// Runs an invocation in `isolate`; a cold start's module evaluation is
/// part of its cost.
pub(super) async fn run_in(
    isolate: &mut FunctionIsolate,
    invocation: &Invocation,
    started: Instant,
    deadline: Instant,
    cold_start: bool,
) -> Outcome {
    let result = isolate.invoke(invocation, deadline).await;
    let startup = if cold_start {
        isolate.startup_cpu()
    } else {
        std::time::Duration::ZERO
    };
    let metrics = InvocationMetrics {
        cold_start,
        duration_us: started.elapsed().as_micros() as u64,
        cpu_us: (isolate.cpu_used() + startup).as_micros() as u64,
        peak_heap_bytes: isolate.memory_in_use() as u64,
    };
    Outcome {
        result,
        logs: isolate.take_logs(),
        metrics,
    }
}

/// Whether an invocation is a request for a WebSocket, which runs in its
/// function's host on its home worker.
pub(super) fn is_upgrade(invocation: &Invocation) -> bool {
    matches!(&invocation.input, isola_core::InvocationInput::Http(request)
        if isola_core::websocket::is_websocket_upgrade(&request.headers))
}
