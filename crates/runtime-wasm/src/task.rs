//! Where Wasm runs, and how one run answers its caller.
//!
//! A run is a task on the caller's own tokio runtime: a request served on
//! a worker thread runs its Wasm there, with no thread hop, as JavaScript
//! does. wasmtime's async API turns a guest into a future that yields at
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

/// Runs `work` as a task of the current runtime under a wall-clock limit
/// of `timeout` and charges its polls to `meter`; the outcome it sends
/// through its [`Reply`] comes back.
pub async fn run<F>(
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
    let task = tokio::spawn(async move {
        if tokio::time::timeout(timeout, work).await.is_err() {
            let late = reply.body.lock().unwrap().take();
            match late {
                Some(body) => {
                    let _ = body.try_send(Err(timed_out(timeout).message));
                }
                None => reply.send(Outcome::failed(timed_out(timeout))),
            }
        }
    });
    // Dropped before the answer (the caller gave up), the run stops;
    // answered, it may go on streaming its body.
    let mut abort = AbortOnDrop(Some(task.abort_handle()));
    let outcome = answered.await.unwrap_or_else(|_| {
        Outcome::failed(FunctionError::new(
            ErrorCode::Internal,
            "the WebAssembly run stopped without an answer",
        ))
    });
    abort.0 = None;
    outcome
}

/// Aborts a run whose caller is gone before it answered.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

fn timed_out(timeout: Duration) -> FunctionError {
    FunctionError::new(
        ErrorCode::WallTimeout,
        format!(
            "the function did not finish within its {} ms wall-clock limit",
            timeout.as_millis()
        ),
    )
}
