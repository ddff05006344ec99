//! Where Wasm runs, and how one run answers its caller.
//!
//! A run stays on the caller's thread: a request served on a worker thread
//! runs its Wasm there, with no thread hop, as JavaScript does. A command
//! is polled by its caller ([`Placement::Inline`]); an HTTP handler, which
//! may answer before it ends (streaming its body), is a task of the
//! caller's runtime from the start ([`Placement::Task`]), which measured
//! faster under HTTP load (`scripts/bench-http.sh 8 32 wasm`: 36.7k
//! requests/s as a task, 26.3k polled by the connection). wasmtime's async API turns a guest into a future that yields at
//! every epoch tick and at every host call that waits, so a busy guest
//! shares its thread (at most a tick at a time) and a sleeping one holds
//! none. Each task is bounded by its function's wall-clock limit and
//! charged the CPU time of its polls ([`crate::meter`]).
//!
//! A run answers through a [`Reply`] as soon as it can (a command when it
//! ends, an HTTP handler when it sets its response head) and may go on
//! after that (writing a streamed body); if its time runs out first, the
//! caller gets a `wall_timeout`, or the streamed body an error.

use crate::meter::{Meter, Metered};
use isola_core::{BodyChunk, ErrorCode, FunctionError, Outcome};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where a run's outcome (and its streamed body, if any) goes.
#[derive(Default)]
pub struct Reply {
    answer: Mutex<Option<oneshot::Sender<Outcome>>>,
    body: Mutex<Option<mpsc::Sender<BodyChunk>>>,
}

impl Reply {
    /// Answers the caller (the first answer counts).
    pub fn send(&self, outcome: Outcome) {
        if let Some(answer) = self.answer.lock().unwrap().take() {
            let _ = answer.send(outcome);
        }
    }

    /// Notes the streamed body the answer carries, so that a run stopped
    /// while it writes ends the body with an error rather than cutting it.
    pub fn stream_into(&self, body: mpsc::Sender<BodyChunk>) {
        *self.body.lock().unwrap() = Some(body);
    }
}

/// How a run is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// By its caller; what is left of it once it answered becomes a task.
    Inline,
    /// As a task of the caller's runtime.
    Task,
}

/// Runs `work` under a wall-clock limit of `timeout` and charges its polls
/// to `meter`; the outcome it sends through its [`Reply`] comes back. A
/// caller that goes before the answer stops the run.
pub async fn run<F>(
    placement: Placement,
    timeout: Duration,
    meter: Arc<Meter>,
    work: impl FnOnce(Arc<Reply>) -> F,
) -> Outcome
where
    F: Future<Output = ()> + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let reply = Arc::new(Reply {
        answer: Mutex::new(Some(answer)),
        body: Mutex::default(),
    });
    let work = Metered::new(work(reply.clone()), meter);
    let mut run = Box::pin(async move {
        if tokio::time::timeout(timeout, work).await.is_err() {
            let late = reply.body.lock().unwrap().take();
            match late {
                // The client must see the body fail, not end: wait for room.
                Some(body) => {
                    let failed = body.send(Err(timed_out(timeout).message));
                    let _ = tokio::time::timeout(LATE_ERROR_WAIT, failed).await;
                }
                None => reply.send(Outcome::failed(timed_out(timeout))),
            }
        }
    });
    // Dropped before the answer (the caller gave up), the run stops with
    // it; answered first, it goes on by itself.
    let mut answered = std::pin::pin!(answered);
    let answer = match placement {
        Placement::Inline => tokio::select! {
            biased;
            () = &mut run => answered.try_recv().ok(),
            answer = &mut answered => {
                tokio::spawn(run);
                answer.ok()
            }
        },
        Placement::Task => {
            let task = tokio::spawn(run);
            // Dropped before the answer (the caller gave up), the task is
            // stopped; answered, it goes on.
            let mut abort = AbortOnDrop(Some(task.abort_handle()));
            let answer = answered.await.ok();
            if answer.is_some() {
                abort.0 = None;
            }
            answer
        }
    };
    answer.unwrap_or_else(|| {
        Outcome::failed(FunctionError::new(
            ErrorCode::Internal,
            "the WebAssembly run stopped without an answer",
        ))
    })
}

/// Aborts a task when dropped, unless disarmed (`None`).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// How long the error that ends a body cut off by the wall-clock limit
/// may wait for room in its channel.
const LATE_ERROR_WAIT: Duration = Duration::from_secs(10);

fn timed_out(timeout: Duration) -> FunctionError {
    FunctionError::new(
        ErrorCode::WallTimeout,
        format!(
            "the function did not finish within its {} ms wall-clock limit",
            timeout.as_millis()
        ),
    )
}
