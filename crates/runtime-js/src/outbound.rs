//! Outbound limits enforced in Rust, where JavaScript cannot reach them.
//!
//! deno_fetch's `op_fetch_send` is replaced (through the op middleware) by
//! [`op_isola_fetch_send`]: every hop of a fetch, redirects included, counts
//! as a subrequest; the time to the response head is bounded; and the body
//! is handed to JavaScript through [`CountedBody`], which counts the bytes
//! as read, after decompression, against the invocation's byte budget.
//!
//! Work that ops hand to other threads (WebCrypto's blocking tasks) is
//! timed by [`op_isola_offload_begin`] / [`op_isola_offload_end`] and charged
//! to the invocation as CPU time.

use deno_core::{op2, AsyncResult, BufView, OpState, Resource, ResourceId};
use deno_error::JsErrorBox;
use deno_fetch::{FetchError, FetchRequestResource, FetchResponse, FetchResponseResource};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What one invocation may fetch, and what it fetched so far.
#[derive(Clone, Default)]
pub struct FetchBudget {
    /// Hops allowed per invocation.
    pub max_subrequests: u32,
    /// Response body bytes allowed per invocation.
    pub max_bytes: u64,
    /// Time allowed until a response head.
    pub timeout: Duration,
    /// Hops made so far.
    pub subrequests: Rc<Cell<u32>>,
    /// Body bytes read so far.
    pub bytes: Rc<Cell<u64>>,
}

impl FetchBudget {
    /// Starts the next invocation's count.
    pub fn reset(&self) {
        self.subrequests.set(0);
        self.bytes.set(0);
    }
}

/// Sends a prepared fetch request under the invocation's limits.
#[op2]
pub async fn op_isola_fetch_send(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
) -> Result<FetchResponse, JsErrorBox> {
    let budget = state.borrow().borrow::<FetchBudget>().clone();
    let request = state
        .borrow_mut()
        .resource_table
        .take::<FetchRequestResource>(rid)
        .map_err(JsErrorBox::from_err)?;
    let made = budget.subrequests.get() + 1;
    budget.subrequests.set(made);
    if made > budget.max_subrequests {
        return Err(JsErrorBox::type_error(format!(
            "fetch refused: an invocation may make at most {} subrequests (redirects count)",
            budget.max_subrequests
        )));
    }
    let request = Rc::try_unwrap(request)
        .map_err(|_| JsErrorBox::type_error("this fetch request is already being sent"))?;
    let response = match tokio::time::timeout(budget.timeout, request.future).await {
        Err(_) => {
            return Err(JsErrorBox::type_error(format!(
                "fetch timed out: no response within {} ms",
                budget.timeout.as_millis()
            )))
        }
        Ok(Err(_canceled)) => return Err(JsErrorBox::from_err(FetchError::RequestCanceled)),
        Ok(Ok(Err(FetchError::ClientSend(error)))) => {
            // As deno_fetch does: a TypeError "fetch failed" with the detail.
            let detail = error.to_string();
            return Ok(FetchResponse {
                error: Some((detail.clone(), detail)),
                ..Default::default()
            });
        }
        Ok(Ok(Err(error))) => return Err(JsErrorBox::from_err(error)),
        Ok(Ok(Ok(response))) => response,
    };
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.as_bytes().into()))
        .collect();
    let content_length = http_body::Body::size_hint(response.body()).exact();
    let body = CountedBody {
        inner: Rc::new(FetchResponseResource::new(response, content_length)),
        budget,
    };
    let response_rid = state.borrow_mut().resource_table.add(body);
    Ok(FetchResponse {
        status: status.as_u16(),
        status_text: status.canonical_reason().unwrap_or("").to_string(),
        headers,
        url: request.url.into(),
        response_rid,
        content_length,
        // Hops are decoded by the client; the counted bytes are decoded ones.
        body_decoded: false,
        error: None,
    })
}

/// A fetch response body that counts what JavaScript reads of it.
pub struct CountedBody {
    inner: Rc<FetchResponseResource>,
    budget: FetchBudget,
}

impl Resource for CountedBody {
    fn name(&self) -> Cow<'_, str> {
        "fetchResponse".into()
    }

    fn read(self: Rc<Self>, limit: usize) -> AsyncResult<BufView> {
        Box::pin(async move {
            let chunk = self.inner.clone().read(limit).await?;
            let read = self.budget.bytes.get() + chunk.len() as u64;
            self.budget.bytes.set(read);
            if read > self.budget.max_bytes {
                self.inner.clone().close();
                return Err(JsErrorBox::type_error(format!(
                    "fetch response too large: this invocation may read at most {} bytes from fetch",
                    self.budget.max_bytes
                )));
            }
            Ok(chunk)
        })
    }

    fn size_hint(&self) -> (u64, Option<u64>) {
        self.inner.size_hint()
    }

    fn close(self: Rc<Self>) {
        self.inner.clone().close()
    }
}

/// The CPU time the threads that offloaded work runs on have spent so far.
pub type PoolClock = Box<dyn Fn() -> Duration>;

/// Work handed to other threads, by id, with when it started (wall clock,
/// and the CPU clock of the threads it may run on); and where its time is
/// charged (the invocation's CPU meter).
pub struct Offloaded {
    started: HashMap<u32, (Instant, Duration)>,
    next: u32,
    charge: Rc<Cell<Duration>>,
    pool: Option<PoolClock>,
}

impl Offloaded {
    /// Charges into `charge` (see `CpuMeter::offloaded`); `pool` reads the
    /// CPU clock of the threads the work runs on (without it, wall time is
    /// charged).
    pub fn new(charge: Rc<Cell<Duration>>, pool: Option<PoolClock>) -> Self {
        Self {
            started: HashMap::new(),
            next: 0,
            charge,
            pool,
        }
    }

    fn now(&self) -> (Instant, Duration) {
        (
            Instant::now(),
            self.pool.as_ref().map_or(Duration::ZERO, |pool| pool()),
        )
    }

    /// What work that started at `started` cost until `now`: the CPU the
    /// threads spent meanwhile, at most the wall time that passed (other
    /// work may have run on those threads too).
    fn cost(&self, started: (Instant, Duration), now: (Instant, Duration)) -> Duration {
        let wall = now.0.saturating_duration_since(started.0);
        match self.pool {
            Some(_) => wall.min(now.1.saturating_sub(started.1)),
            None => wall,
        }
    }

    fn add(&self, cost: Duration) {
        self.charge.set(self.charge.get() + cost);
    }

    /// Charges the time of work still running (at the end of an
    /// invocation) and starts counting it again from now.
    pub fn charge_running(&mut self) {
        if self.started.is_empty() {
            return;
        }
        let now = self.now();
        let total = self
            .started
            .values()
            .map(|started| self.cost(*started, now))
            .sum();
        self.started.values_mut().for_each(|started| *started = now);
        self.add(total);
    }
}

/// Starts timing work done on another thread; returns its id.
#[op2(fast)]
pub fn op_isola_offload_begin(state: &mut OpState) -> u32 {
    let offloaded = state.borrow_mut::<Offloaded>();
    let id = offloaded.next;
    offloaded.next = offloaded.next.wrapping_add(1);
    let now = offloaded.now();
    offloaded.started.insert(id, now);
    id
}

/// Ends timing work `id` and charges its time to the invocation.
#[op2(fast)]
pub fn op_isola_offload_end(state: &mut OpState, id: u32) {
    let offloaded = state.borrow_mut::<Offloaded>();
    if let Some(started) = offloaded.started.remove(&id) {
        let cost = offloaded.cost(started, offloaded.now());
        offloaded.add(cost);
    }
}
