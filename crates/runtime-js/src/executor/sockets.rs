//! WebSocket hosts. A request that asks for a WebSocket runs on its
//! function's home worker, in the one isolate there that holds all of the
//! function version's open connections on this node, so that they can see
//! each other (a chat room broadcasts to all of them). The host runs one
//! thing at a time: an upgrade request, an event a client sent (each under
//! the limits of one invocation), or what listeners left behind.
//!
//! The host holds its function's memory reservation while connections are
//! open, refuses connections past `websocket_connections`, closes them all
//! with 1012 when the version is evicted (a redeploy) and with 1011 when
//! the function breaks a limit (which quarantines it: its next connections
//! are hosted on the quarantine worker), and gives its isolate back to the
//! warm pool when its last connection closes.

use super::*;
use isola_core::websocket::{close_code, EventReport, SocketEvent, WsFrame};
use isola_core::{InvocationOutput, LogEntry};
use tokio::sync::Notify;

/// How often a host without events looks for connections that went away
/// without a word.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Events from clients waiting for a host, at most: a client that sends
/// faster than its function handles waits, and its TCP window fills.
const EVENT_QUEUE: usize = 64;

/// An upgrade request for a host.
pub(super) struct UpgradeJob {
    pub(super) invocation: Invocation,
    pub(super) reply: oneshot::Sender<Outcome>,
    pub(super) held: (OwnedSemaphorePermit, Admitted),
}

/// A worker's handle on one of its hosts.
pub(super) struct HostHandle {
    upgrades: mpsc::UnboundedSender<UpgradeJob>,
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
    /// The function's memory reservation, while connections are open.
    reserved: Option<Admitted>,
    /// What background work printed, for the next event's report.
    pending_logs: Vec<LogEntry>,
}

impl Worker {
    /// Runs an upgrade request in its function's host, starting one.
    pub(super) fn upgrade(self: &Rc<Self>, job: UpgradeJob) {
        let source = job.invocation.function.clone();
        let job = match self.hosts.0.borrow().get(&source.id) {
            Some(host) => match host.upgrades.send(job) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
            None => job,
        };
        let (upgrades, receiver) = mpsc::unbounded_channel();
        let stop = Rc::new(Notify::new());
        let _ = upgrades.send(job);
        let handle = HostHandle {
            upgrades,
            stop: stop.clone(),
        };
        self.hosts.0.borrow_mut().insert(source.id.clone(), handle);
        let (events, event_queue) = mpsc::channel(EVENT_QUEUE);
        let host = Host {
            worker: self.clone(),
            source,
            isolate: None,
            events,
            reserved: None,
            pending_logs: Vec::new(),
        };
        tokio::task::spawn_local(host.run(receiver, event_queue, stop));
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
            tokio::select! {
                biased;
                _ = stop.notified() => {
                    break Some((close_code::SERVICE_RESTART, "the function was redeployed"));
                }
                Some(job) = upgrades.recv() => self.upgrade(job).await,
                Some(event) = events.recv() => self.event(event).await,
                report = Self::background(&mut self.isolate), if background => {
                    self.pending_logs.extend(report.logs);
                }
                _ = tokio::time::sleep(SWEEP) => {}
            }
            if self.isolate.as_ref().is_some_and(|i| !i.is_reusable()) {
                break Some((close_code::INTERNAL, "the function failed"));
            }
            if self.open() == 0 {
                self.reserved = None;
                if upgrades.is_empty() {
                    break None;
                }
            }
        };
        // Deregistered before any await: no upgrade can reach this host now.
        self.worker.hosts.0.borrow_mut().remove(&self.source.id);
        let Some(mut isolate) = self.isolate.take() else {
            return;
        };
        match closing {
            Some((code, reason)) => isolate.close_sockets(code, reason),
            None if isolate.is_reusable() => {
                isolate.forget_unused_sockets();
                isolate.drop_socket_events();
                self.worker.checkin(isolate);
            }
            None => {}
        }
        // Upgrades that came as it stopped go to a new host.
        while let Ok(job) = upgrades.try_recv() {
            self.worker.upgrade(job);
        }
    }

    async fn background(isolate: &mut Option<FunctionIsolate>) -> EventReport {
        match isolate {
            Some(isolate) => isolate.background().await,
            None => std::future::pending().await,
        }
    }

    /// Delivers one client event; a close ends that connection.
    async fn event(&mut self, event: SocketEvent) {
        let closing = matches!(event.frame, WsFrame::Close { .. });
        let mut report = match self.isolate.as_mut() {
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
        let broke = report.error.as_ref().is_some_and(|error| {
            matches!(error.code, ErrorCode::CpuLimit | ErrorCode::MemoryLimit)
        });
        if broke {
            // Its next connections run on the quarantine worker.
            self.worker.quarantined.admit(&self.source.id);
        }
        if !self.pending_logs.is_empty() {
            let mut logs = std::mem::take(&mut self.pending_logs);
            logs.append(&mut report.logs);
            report.logs = logs;
        }
        let _ = event.done.send(report);
    }

    /// Runs an upgrade request in the host's isolate (made first if need be).
    async fn upgrade(&mut self, job: UpgradeJob) {
        let UpgradeJob {
            invocation,
            reply,
            held: (_permit, admitted),
        } = job;
        let worker = self.worker.clone();
        let limit = self.source.limits.websocket_connections as usize;
        let outcome = if self.open() >= limit {
            Outcome::failed(FunctionError::new(
                ErrorCode::Unavailable,
                format!("the function holds {limit} WebSocket connections, as many as its websocket_connections limit allows"),
            ))
        } else {
            self.run_upgrade(&invocation).await
        };
        let socket = matches!(&outcome.result,
            Ok(InvocationOutput::Http(response)) if response.upgrade.is_some());
        if socket && self.reserved.is_none() {
            self.reserved = Some(admitted);
        }
        worker.in_flight.fetch_sub(1, Ordering::Relaxed);
        worker.stats.invocations.fetch_add(1, Ordering::Relaxed);
        // Should its caller have gone, the link drops with the outcome, and
        // the connection is no longer counted open.
        let _ = reply.send(outcome);
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
        let cold_start = self.isolate.is_none();
        if cold_start {
            match self
                .worker
                .obtain(&invocation.function, started, deadline)
                .await
            {
                Ok((isolate, cold)) => {
                    let mut isolate = isolate;
                    isolate.host_sockets(self.events.clone());
                    self.isolate = Some(isolate);
                    let isolate = self.isolate.as_mut().expect("just set");
                    let outcome =
                        worker::run_in(isolate, invocation, started, deadline, cold).await;
                    isolate.forget_unused_sockets();
                    return outcome;
                }
                Err(outcome) => return outcome,
            }
        }
        let isolate = self
            .isolate
            .as_mut()
            .expect("a host past its first upgrade has an isolate");
        let outcome = worker::run_in(isolate, invocation, started, deadline, false).await;
        isolate.forget_unused_sockets();
        outcome
    }
}
