//! After an invocation: running what it left behind, charging work it
//! handed to other threads, measuring and trimming memory, and giving back
//! its bodies and logs.

use super::*;

/// What one more event-loop tick after a successful invocation found.
pub(super) struct Tick {
    polled: Poll<Result<(), ()>>,
    heap: usize,
    external: usize,
}

/// Runs one more event-loop tick, so that rejections left unhandled by a
/// successful invocation reach its log, and measures memory. Called inside
/// the invocation's last slice, with the isolate entered.
pub(super) fn tick(runtime: &mut JsRuntime) -> Tick {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let polled = runtime
        .poll_event_loop(&mut cx, PollEventLoopOptions::default())
        .map(|done| done.map_err(|_| ()));
    let stats = runtime.v8_isolate().get_heap_statistics();
    Tick {
        polled,
        heap: stats.used_heap_size(),
        external: stats.external_memory(),
    }
}

impl FunctionIsolate {
    /// Takes in what the tick after a successful invocation found: its
    /// memory, and whether the event loop is idle.
    pub(super) fn settle(&mut self, tick: Tick) {
        self.account(tick.heap, tick.external);
        match tick.polled {
            Poll::Ready(Ok(())) => self.idle = true,
            Poll::Ready(Err(())) => self.broken = true,
            Poll::Pending => self.idle = false,
        }
    }

    /// Runs what the invocation left behind (`ctx.waitUntil` promises,
    /// timers) until the event loop is idle or `deadline` passes.
    pub async fn drain(&mut self, deadline: Instant) {
        if self.idle || !self.is_reusable() {
            return;
        }
        let Self {
            runtime,
            raw,
            meter,
            ..
        } = self;
        let mut polls = 0u32;
        let drained = Metered {
            raw: *raw,
            meter,
            inner: Box::pin(std::future::poll_fn(|cx| {
                polls += 1;
                runtime.poll_event_loop(cx, PollEventLoopOptions::default())
            })),
        };
        match tokio::time::timeout_at(deadline, drained).await {
            Ok(Ok(())) => {}
            _ => self.broken = true,
        }
        self.idle = true;
        if polls > 1 {
            // Work ran after the result: its memory counts for the pool.
            self.measure_memory();
        }
    }

    /// Charges work still running on other threads for this invocation
    /// (WebCrypto), so its CPU time is in the invocation's figures.
    pub(super) fn charge_offloaded(&mut self) {
        let state = self.runtime.op_state();
        state
            .borrow_mut()
            .borrow_mut::<Offloaded>()
            .charge_running();
        let offloaded = self.meter.offloaded().take();
        self.meter.charge(offloaded);
    }

    /// Collects the isolate's garbage before it goes back to the pool, when
    /// it holds more than `above` bytes outside its heap beyond what it held
    /// after its last collection: buffers an invocation dropped (a streamed
    /// upload's chunks) otherwise stay until V8 next feels heap pressure,
    /// held by an idle isolate. A function that keeps its buffers (a table
    /// in module scope) is not collected after every invocation.
    pub fn trim(&mut self, above: usize) {
        if self.native_in_use <= above.max(self.trimmed_to.saturating_add(above)) {
            return;
        }
        let runtime = &mut self.runtime;
        entered(self.raw, &mut self.meter, || {
            runtime.v8_isolate().low_memory_notification()
        });
        self.measure_memory();
        self.trimmed_to = self.native_in_use;
    }

    /// Drops the request bodies and response sinks the last invocation left
    /// open (a body the function never read, a stream it never finished), so
    /// that their connections end and their memory is freed with the
    /// invocation, whether or not the isolate is kept warm.
    pub fn release_bodies(&mut self) {
        let state = self.runtime.op_state();
        let mut state = state.borrow_mut();
        state.borrow_mut::<RequestBodies>().streams.clear();
        let sinks = state.borrow_mut::<BodySinks>();
        sinks.senders.clear();
        sinks.opened = None;
        // Pairs a plain request made can never be returned in a 101.
        state
            .borrow_mut::<crate::websocket::Sockets>()
            .forget_unused();
    }

    /// Console output captured since the last call.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        let mut buffer = self.console.0.borrow_mut();
        let dropped = std::mem::take(&mut buffer.dropped);
        buffer.bytes = 0;
        let mut logs: Vec<LogEntry> = buffer
            .lines
            .drain(..)
            .map(|(level, message)| LogEntry {
                level: console_level(level),
                message,
            })
            .collect();
        if dropped > 0 {
            logs.push(LogEntry {
                level: LogLevel::Warn,
                message: format!("{dropped} console lines dropped: output limit reached"),
            });
        }
        logs
    }

    /// Notes the memory held: `heap` bytes, and `external` ones plus what
    /// Rust holds for the function outside it.
    fn account(&mut self, heap: usize, external: usize) {
        self.native_in_use = external + self.guard.extra();
        self.memory_in_use = heap + self.native_in_use;
    }

    pub(super) fn measure_memory(&mut self) {
        let runtime = &mut self.runtime;
        let stats = entered(self.raw, &mut self.meter, || {
            runtime.v8_isolate().get_heap_statistics()
        });
        self.account(stats.used_heap_size(), stats.external_memory());
    }
}
