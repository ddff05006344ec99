//! WebSocket hosts. A request that asks for a WebSocket runs on its
//! function's home worker, in the one isolate there that holds all of the
//! function version's open connections on this node, so that they can see
//! each other (a chat room broadcasts to all of them). The host runs one
//! thing at a time: an upgrade request, an event a client sent (each under
//! the limits of one invocation), or a turn of what listeners left behind
//! (timers, fetches: a turn may use `cpu_ms`; past `cpu_ms` in a second,
//! they wait for the next second; billed to the next event).
//!
//! Who pays: the host holds its function's memory reservation for its life
//! (upgrades waiting for it hold none, and at most [`MAX_WAITING`] wait);
//! it refuses connections past `websocket_connections`, closes them all
//! with 1012 when the version is evicted (a redeploy; upgrades still queued
//! then are refused) and with 1011 when the function breaks a limit (which
//! quarantines it: its next connections are hosted on the quarantine
//! worker), and gives its isolate back to the warm pool when its last
//! connection closes.

use super::*;
use isola_core::websocket::{close_code, EventReport, SocketEvent, WsFrame};
use tokio::sync::Notify;

/// Events from clients waiting for a host, at most: a client that sends
/// faster than its function handles waits, and its TCP window fills.
const EVENT_QUEUE: usize = 64;

/// Upgrade requests waiting for a busy host, at most; past it, 503. They
/// hold no memory or worker slot (and each its place among the node's
/// connections), so a burst of reconnections fits.
const MAX_WAITING: usize = 1024;

/// How often a host without events looks for connections that went away
/// without a word.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Background work may take the function's `cpu_ms` in each such window.
const BACKGROUND_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a failed host still answers its connections' closes, so that
/// their records get the failure.
const FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// An upgrade request for a host.
pub(super) struct UpgradeJob {
    pub(super) invocation: Invocation,
    pub(super) reply: oneshot::Sender<Outcome>,
    /// Its worker slot and memory reservation: kept by a new host (its
    /// reservation for life), dropped by one that queues for a host.
    pub(super) held: Option<(OwnedSemaphorePermit, Admitted)>,
}

/// A worker's handle on one of its hosts.
pub(super) struct HostHandle {
    upgrades: mpsc::UnboundedSender<UpgradeJob>,
    waiting: Rc<Cell<usize>>,
    stop: Rc<Notify>,
}

/// Hosts of a worker, by function version.
#[derive(Default)]
pub(super) struct Hosts(RefCell<std::collections::HashMap<String, HostHandle>>);

impl Hosts {
    /// Asks the host of `id`, if there is one, to close its connections
    /// (1012) and end.
    pub(super) fn stop(&self, id: &str) {
        if let Some(host) = self.0.borrow().get(id) {
            host.stop.notify_one();
        }
    }
}

/// What a host holds.
struct Host {
    worker: Rc<Worker>,
    source: Arc<FunctionSource>,
    isolate: Option<FunctionIsolate>,
    events: mpsc::Sender<SocketEvent>,
    waiting: Rc<Cell<usize>>,
    /// The function's memory reservation, for the host's life.
    _reserved: Option<Admitted>,
    /// What background work printed and cost, for the next event's report.
    pending: EventReport,
    /// When the current background window began, and the CPU used in it.
    window: (Instant, std::time::Duration),
}

/// Whether a failure broke the function's CPU or memory limit.
fn breaks_limit(error: &FunctionError) -> bool {
    matches!(error.code, ErrorCode::CpuLimit | ErrorCode::MemoryLimit)
}

/// The answer to an upgrade a host cannot take.
fn refused(message: String) -> Outcome {
    Outcome::failed(FunctionError::new(ErrorCode::Unavailable, message))
}

impl Worker {
    /// Runs an upgrade request in its function's host, starting one.
    pub(super) fn upgrade(self: &Rc<Self>, mut job: UpgradeJob) {
        let source = job.invocation.function.clone();
        if let Some(host) = self.hosts.0.borrow().get(&source.id) {
            if host.waiting.get() >= MAX_WAITING {
                self.answered(
                    job.reply,
                    refused(format!(
                    "{MAX_WAITING} WebSocket requests already wait for this function: retry shortly"
                )),
                );
                return;
            }
            // Waiting holds neither a worker slot nor memory.
            job.held = None;
            host.waiting.set(host.waiting.get() + 1);
            if let Err(returned) = host.upgrades.send(job) {
                host.waiting.set(host.waiting.get() - 1);
                let message = "the function's WebSocket host stopped: retry".to_string();
                self.answered(returned.0.reply, refused(message));
            }
            return;
        }
        let (upgrades, receiver) = mpsc::unbounded_channel();
        let stop = Rc::new(Notify::new());
        let waiting = Rc::new(Cell::new(1));
        let reserved = job.held.take().map(|(_permit, admitted)| admitted);
        let _ = upgrades.send(job);
        let handle = HostHandle {
            upgrades,
            waiting: waiting.clone(),
            stop: stop.clone(),
        };
        self.hosts.0.borrow_mut().insert(source.id.clone(), handle);
        self.hosted.set(&source.id, Some(self.place));
        let (events, event_queue) = mpsc::channel(EVENT_QUEUE);
        let host = Host {
            worker: self.clone(),
            source,
            isolate: None,
            events,
            waiting,
            _reserved: reserved,
            pending: EventReport::default(),
            window: (Instant::now(), std::time::Duration::ZERO),
        };
        tokio::task::spawn_local(host.run(receiver, event_queue, stop));
    }

    /// Answers an upgrade request (it no longer counts in flight).
    fn answered(&self, reply: oneshot::Sender<Outcome>, outcome: Outcome) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let _ = reply.send(outcome);
    }
}

impl Host {
    async fn run(
        mut self,
        mut upgrades: mpsc::UnboundedReceiver<UpgradeJob>,
        mut events: mpsc::Receiver<SocketEvent>,
        stop: Rc<Notify>,
    ) {
        let closing = loop {
            let background = self
                .isolate
                .as_ref()
                .is_some_and(FunctionIsolate::has_background_work);
            // Past `cpu_ms` in this window, background work waits for the next.
            let throttled = self.background_spent();
            // Not biased: upgrades and events take turns.
            tokio::select! {
                _ = stop.notified() => {
                    break Some((close_code::SERVICE_RESTART, "the function was redeployed"));
                }
                Some(job) = upgrades.recv() => {
                    self.bill_interrupted();
                    self.upgrade(job).await;
                }
                Some(event) = events.recv() => {
                    self.bill_interrupted();
                    self.event(event).await;
                }
                report = Self::background(&mut self.isolate), if background && !throttled => {
                    self.window.1 += std::time::Duration::from_micros(report.cpu_us);
                    self.pending_add(report);
                }
                _ = tokio::time::sleep_until(self.window.0 + BACKGROUND_WINDOW), if background && throttled => {}
                _ = tokio::time::sleep(SWEEP) => {}
            }
            if self.isolate.as_ref().is_some_and(|i| !i.is_reusable()) {
                if self.pending.error.as_ref().is_some_and(breaks_limit) {
                    self.worker.quarantined.admit(&self.source.id);
                }
                break Some((close_code::INTERNAL, "the function failed"));
            }
            if self.open() == 0 && upgrades.is_empty() {
                break None;
            }
        };
        self.finish(closing, upgrades, events).await;
    }

    /// Ends the host: closes its connections with `closing` (or gives its
    /// isolate back to the pool when none is left open).
    async fn finish(
        mut self,
        closing: Option<(u16, &str)>,
        mut upgrades: mpsc::UnboundedReceiver<UpgradeJob>,
        mut events: mpsc::Receiver<SocketEvent>,
    ) {
        // Deregistered before any await: no upgrade can reach this host now.
        self.worker.hosts.0.borrow_mut().remove(&self.source.id);
        self.worker.hosted.set(&self.source.id, None);
        // Those that came as it stopped are refused (a redeploy: the client
        // retries and reaches the new version).
        while let Ok(job) = upgrades.try_recv() {
            let message = "the function was redeployed: retry".to_string();
            self.worker.answered(job.reply, refused(message));
        }
        let Some(mut isolate) = self.isolate.take() else {
            return;
        };
        match closing {
            Some((code, reason)) => {
                isolate.close_sockets(code, reason);
                self.isolate = Some(isolate);
                self.answer_closes(&mut events).await;
            }
            None if isolate.is_reusable() => {
                isolate.forget_unused_sockets();
                isolate.drop_socket_events();
                self.worker.checkin(isolate);
            }
            None => {}
        }
    }

    /// After a failure or a redeploy: the closes of its connections (for a
    /// short while) get what happened, so that their records have it.
    async fn answer_closes(&mut self, events: &mut mpsc::Receiver<SocketEvent>) {
        let until = Instant::now() + FAILED_GRACE;
        while self.open() > 0 {
            let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await else {
                return;
            };
            // The logs go with the first close, the failure with each.
            let error = self.pending.error.clone();
            let mut report = std::mem::take(&mut self.pending);
            report.error = report.error.or(error.clone());
            self.pending.error = error;
            if let Some(isolate) = self.isolate.as_mut() {
                isolate.forget_socket(event.socket);
            }
            let _ = event.done.send(report);
        }
    }

    /// Whether background work used its `cpu_ms` in the current window.
    fn background_spent(&mut self) -> bool {
        if self.window.0.elapsed() >= BACKGROUND_WINDOW {
            self.window = (Instant::now(), std::time::Duration::ZERO);
        }
        self.window.1 >= self.source.limits.cpu()
    }

    /// Counts and bills what a background turn dropped for an event used.
    fn bill_interrupted(&mut self) {
        let Some(isolate) = self.isolate.as_mut() else {
            return;
        };
        let cpu = isolate.take_background_cpu();
        self.window.1 += cpu;
        self.pending.cpu_us += cpu.as_micros() as u64;
    }

    async fn background(isolate: &mut Option<FunctionIsolate>) -> EventReport {
        match isolate {
            Some(isolate) => isolate.background().await,
            None => std::future::pending().await,
        }
    }

    /// Keeps what background work reported for the next event's report.
    fn pending_add(&mut self, report: EventReport) {
        self.pending.cpu_us += report.cpu_us;
        self.pending.logs.extend(report.logs);
        if report.error.is_some() {
            self.pending.error = report.error;
        }
    }

    /// Delivers one client event; a close ends that connection.
    async fn event(&mut self, event: SocketEvent) {
        let closing = matches!(event.frame, WsFrame::Close { .. });
        let report = match self.isolate.as_mut() {
            Some(isolate) => {
                let deadline = Instant::now() + self.source.limits.timeout();
                isolate.deliver(event.socket, &event.frame, deadline).await
            }
            None => EventReport::default(),
        };
        if let Some(isolate) = self.isolate.as_mut() {
            if closing {
                isolate.forget_socket(event.socket);
            }
            // A pair made by a listener can never be returned in a 101.
            isolate.forget_unused_sockets();
        }
        if report.error.as_ref().is_some_and(breaks_limit) {
            // Its next connections run on the quarantine worker.
            self.worker.quarantined.admit(&self.source.id);
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.cpu_us += report.cpu_us;
        pending.logs.extend(report.logs);
        pending.error = report.error.or(pending.error);
        let _ = event.done.send(pending);
    }

    /// Runs an upgrade request in the host's isolate (made first if need be).
    async fn upgrade(&mut self, job: UpgradeJob) {
        let UpgradeJob {
            invocation, reply, ..
        } = job;
        self.waiting.set(self.waiting.get().saturating_sub(1));
        let worker = self.worker.clone();
        if reply.is_closed() {
            // Its caller gave up while it waited.
            worker.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let limit = self.source.limits.websocket_connections as usize;
        let outcome = if self.open() >= limit {
            refused(format!("the function holds {limit} WebSocket connections, as many as its websocket_connections limit allows"))
        } else {
            self.run_upgrade(&invocation).await
        };
        // Should its caller have gone, the link drops with the outcome, and
        // the connection is no longer counted open.
        worker.answered(reply, outcome);
    }

    /// Connections open.
    fn open(&mut self) -> usize {
        self.isolate
            .as_mut()
            .map_or(0, FunctionIsolate::open_sockets)
    }

    async fn run_upgrade(&mut self, invocation: &Invocation) -> Outcome {
        let started = Instant::now();
        let deadline = started + invocation.function.limits.timeout();
        let mut cold_start = false;
        if self.isolate.is_none() {
            match self
                .worker
                .obtain(&invocation.function, started, deadline)
                .await
            {
                Ok((mut isolate, cold)) => {
                    isolate.host_sockets(self.events.clone());
                    self.isolate = Some(isolate);
                    cold_start = cold;
                }
                Err(outcome) => return outcome,
            }
        }
        let isolate = self.isolate.as_mut().expect("a host has an isolate by now");
        let outcome = worker::run_in(isolate, invocation, started, deadline, cold_start).await;
        isolate.forget_unused_sockets();
        outcome
    }
}
