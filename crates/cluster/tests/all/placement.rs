//! Placement through a real nats-server: each function sticks to its slice
//! of the workers; a worker that dies is routed around at once and
//! forgotten within seconds; one that joins takes its share.

use crate::nats::NatsServer;
use async_trait::async_trait;
use isola_cluster::assigner::{run_assigner, Assignment, Assignments, LEASE};
use isola_cluster::members::{self, Heartbeat, Members, DEAD_AFTER};
use isola_cluster::{serve_worker, Deployments, NatsInvoker, WorkerQueue};
use isola_core::{
    BoxFuture, FunctionError, FunctionSource, HttpRequest, Invocation, InvocationInput, Invoker,
    InvokerStats, Outcome, RuntimeKind,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which worker ran which function, how many times.
type Ran = Arc<Mutex<HashMap<(String, String), u32>>>;

/// A worker's runtime that notes what it ran.
struct Noting {
    worker: String,
    inner: Arc<dyn Invoker>,
    ran: Ran,
}

impl Invoker for Noting {
    fn invoke(&self, invocation: Invocation) -> BoxFuture<'_, Outcome> {
        let key = (self.worker.clone(), invocation.function.name.clone());
        *self.ran.lock().unwrap().entry(key).or_default() += 1;
        self.inner.invoke(invocation)
    }

    fn prepare(&self, function: Arc<FunctionSource>) -> BoxFuture<'_, Result<(), FunctionError>> {
        self.inner.prepare(function)
    }

    fn evict(&self, function_id: &str) {
        self.inner.evict(function_id)
    }

    fn stats(&self) -> InvokerStats {
        self.inner.stats()
    }
}

struct Known(HashMap<String, Arc<FunctionSource>>);

#[async_trait]
impl Deployments for Known {
    async fn find(&self, _function: &str, deployment: &str) -> Option<Arc<FunctionSource>> {
        self.0.get(deployment).cloned()
    }
}

fn functions(n: usize) -> Vec<Arc<FunctionSource>> {
    let bytes = isola_runtime_wasm::fixtures::hello("hi");
    (0..n)
        .map(|i| {
            let name = format!("f{i}");
            let mut source = FunctionSource::single_module(format!("{name}:v1"), &name, "");
            source.runtime = RuntimeKind::detect(&bytes);
            source.entry = "main.wasm".into();
            source.files[0].path = "main.wasm".into();
            source.files[0].code = bytes.clone();
            Arc::new(source)
        })
        .collect()
}

/// A worker in this process: its serving and heartbeat tasks, and its
/// connection.
struct Worker(Vec<tokio::task::JoinHandle<()>>, async_nats::Client);

impl Worker {
    async fn start(
        server: &NatsServer,
        id: &str,
        known: &[Arc<FunctionSource>],
        ran: &Ran,
    ) -> Self {
        let client = server.client().await;
        let runtime: Arc<dyn Invoker> = Arc::new(Noting {
            worker: id.into(),
            inner: Arc::new(isola_runtime_wasm::WasmRuntime::new().unwrap()),
            ran: ran.clone(),
        });
        let known = Known(known.iter().map(|f| (f.id.clone(), f.clone())).collect());
        let queue = WorkerQueue::join(client.clone(), id).await.unwrap();
        let connection = client.clone();
        let heartbeat = Heartbeat {
            id: id.into(),
            runs_invocations: true,
            serves_http: false,
            in_flight: 0,
            leaving: false,
            load: Vec::new(),
        };
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let beating = members::beat(client, heartbeat, || (0, Vec::new()), stopped);
        let serving = tokio::spawn(serve_worker(
            queue,
            runtime,
            Arc::new(known),
            std::future::pending(),
        ));
        std::mem::forget(_stop);
        Self(vec![beating, serving], connection)
    }

    /// Dies without a word, as a killed process does: its heartbeats stop
    /// and its connection closes (here, once the server has dropped its
    /// subscriptions, as it does at once when a process dies).
    async fn kill(self, id: &str, observer: &async_nats::Client) {
        for task in self.0 {
            task.abort();
        }
        let _ = self.1.drain().await;
        drop(self.1);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let asked = observer
                .send_request(
                    isola_cluster::direct_subject(id),
                    async_nats::Request::new().timeout(Some(Duration::from_millis(200))),
                )
                .await;
            if asked.is_err_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders) {
                return;
            }
            assert!(Instant::now() < deadline, "worker {id} still subscribed");
        }
    }
}

async fn until_workers(members: &Members, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while members.workers().len() != n {
        assert!(Instant::now() < deadline, "{:?}", members.workers());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Invokes each function `times` times; all must answer 200.
async fn invoke_all(gateway: &NatsInvoker, functions: &[Arc<FunctionSource>], times: usize) {
    for function in functions {
        for _ in 0..times {
            let outcome = gateway
                .invoke(Invocation {
                    id: "inv".into(),
                    function: function.clone(),
                    input: InvocationInput::Http(HttpRequest {
                        method: "GET".into(),
                        url: "http://x/".into(),
                        headers: Vec::new(),
                        body: Vec::new(),
                        rest: Default::default(),
                    }),
                })
                .await;
            match outcome.result {
                Ok(isola_core::InvocationOutput::Http(response)) => {
                    assert_eq!(response.status, 200)
                }
                other => panic!("{} failed: {other:?}", function.name),
            }
        }
    }
}

/// The workers that ran each function.
fn placements(ran: &Ran) -> HashMap<String, HashSet<String>> {
    let mut by_function: HashMap<String, HashSet<String>> = HashMap::new();
    for (worker, function) in ran.lock().unwrap().keys() {
        by_function
            .entry(function.clone())
            .or_default()
            .insert(worker.clone());
    }
    by_function
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_stick_to_their_slice_and_move_when_workers_come_and_go() {
    let server = NatsServer::start().await;
    let functions = functions(12);
    let ran: Ran = Arc::default();
    let mut workers = HashMap::new();
    for id in ["w1", "w2", "w3"] {
        workers.insert(id, Worker::start(&server, id, &functions, &ran).await);
    }
    let client = server.client().await;
    let members = Members::follow(&client).await.unwrap();
    let gateway = NatsInvoker::new(client.clone()).with_members(members.clone());
    until_workers(&members, 3).await;

    // Sticky: each function runs on at most two of the three workers.
    invoke_all(&gateway, &functions, 6).await;
    let placed = placements(&ran);
    assert_eq!(placed.len(), functions.len());
    // (Unless a stalled machine let a heartbeat lapse meanwhile.)
    if members.workers().len() == 3 {
        assert!(placed.values().all(|w| w.len() <= 2), "{placed:?}");
    }

    // A worker dies: its functions are answered at once by another, and
    // it is forgotten within DEAD_AFTER.
    workers.remove("w1").unwrap().kill("w1", &client).await;
    invoke_all(&gateway, &functions, 2).await;
    let forgotten = Instant::now();
    until_workers(&members, 2).await;
    assert!(forgotten.elapsed() <= DEAD_AFTER + Duration::from_secs(2));
    ran.lock().unwrap().clear();
    invoke_all(&gateway, &functions, 2).await;
    assert!(ran.lock().unwrap().keys().all(|(w, _)| w != "w1"));

    // A worker joins: it takes some of the functions.
    workers.insert("w4", Worker::start(&server, "w4", &functions, &ran).await);
    until_workers(&members, 3).await;
    ran.lock().unwrap().clear();
    invoke_all(&gateway, &functions, 4).await;
    let on_new: usize = placements(&ran)
        .values()
        .filter(|w| w.contains("w4"))
        .count();
    assert!(on_new > 0, "{:?}", placements(&ran));
}

/// Slices each worker holds in `assignment`.
fn held(assignment: &Assignment) -> HashMap<String, usize> {
    let mut held = HashMap::new();
    for slice in &assignment.slices {
        for worker in slice {
            *held.entry(worker.clone()).or_default() += 1;
        }
    }
    held
}

/// Waits (20 s at most) until the assignment satisfies `done`; returns
/// how long it took.
async fn until_assigned(
    assignments: &Assignments,
    what: &str,
    done: impl Fn(&Assignment) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(current) = assignments.current() {
            if done(&current) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            assignments.current().map(|a| held(&a))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assigner_keeps_functions_on_one_worker_and_a_standby_takes_over() {
    let server = NatsServer::with_jetstream().await;
    let functions = functions(12);
    let ran: Ran = Arc::default();
    let mut workers = HashMap::new();
    for id in ["w1", "w2", "w3"] {
        workers.insert(id, Worker::start(&server, id, &functions, &ran).await);
    }
    // Two candidates for the assigner, each with its own connection.
    let mut candidates = HashMap::new();
    for id in ["a1", "a2"] {
        let client = server.client().await;
        let members = Members::follow(&client).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        run_assigner(client, id.to_string(), members, stopped);
        candidates.insert(id.to_string(), stop);
    }
    let client = server.client().await;
    let members = Members::follow(&client).await.unwrap();
    let assignments = Assignments::follow(&client).await.unwrap();
    let gateway = NatsInvoker::new(client.clone())
        .with_members(members.clone())
        .with_assignments(assignments.clone());
    until_workers(&members, 3).await;
    until_assigned(&assignments, "every slice on one of 3 workers", |a| {
        let held = held(a);
        held.len() == 3 && held.values().all(|&n| (80..=90).contains(&n))
    })
    .await;

    // Each function runs on one worker (its slice's).
    invoke_all(&gateway, &functions, 6).await;
    let placed = placements(&ran);
    let on_one = placed.values().filter(|w| w.len() == 1).count();
    assert!(on_one >= functions.len() - 1, "{placed:?}");

    // A worker dies: its slices go to the others within seconds.
    workers.remove("w3").unwrap().kill("w3", &client).await;
    let reassigned = until_assigned(&assignments, "w3's slices reassigned", |a| {
        !held(a).contains_key("w3") && a.slices.iter().all(|s| !s.is_empty())
    })
    .await;
    assert!(
        reassigned < DEAD_AFTER + Duration::from_secs(3),
        "{reassigned:?}"
    );
    eprintln!("reassigned a dead worker's slices in {reassigned:?}");

    // The assigner stops: the standby takes over, and keeps assigning (a
    // new worker gets its share).
    let leader = assignments.current().unwrap().assigner.clone();
    let _ = candidates[&leader].send(true);
    workers.insert("w4", Worker::start(&server, "w4", &functions, &ran).await);
    let took_over = until_assigned(&assignments, "the standby assigns w4 its share", |a| {
        a.assigner != leader && held(a).get("w4").is_some_and(|&n| n >= 60)
    })
    .await;
    assert!(
        took_over < LEASE * 2 + Duration::from_secs(5),
        "{took_over:?}"
    );
    eprintln!(
        "the standby assigned a new worker its share {took_over:?} after the assigner stopped"
    );
    invoke_all(&gateway, &functions, 2).await;
}
