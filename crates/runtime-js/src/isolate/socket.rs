//! An isolate that holds WebSocket connections: delivering what a client
//! sent, one event at a time under the function's limits (as an
//! invocation: CPU, wall time, memory, subrequests), and running what
//! listeners left behind (timers, fetches) between events.

use super::*;
use crate::websocket::Sockets;
use isola_core::websocket::{EventReport, SocketEvent, WsFrame, WsMessage};
use tokio::sync::mpsc;

impl FunctionIsolate {
    /// Makes this isolate the home of its function's connections: a `101`
    /// response it returns links its socket to `events`.
    pub fn host_sockets(&mut self, events: mpsc::Sender<SocketEvent>) {
        self.socket_events = Some(events);
    }

    /// Makes this isolate an ordinary one again, for the warm pool.
    pub fn drop_socket_events(&mut self) {
        self.socket_events = None;
        self.close_outbound();
    }

    /// Closes the outbound WebSockets the function opened (its invocation
    /// ended).
    pub fn close_outbound(&mut self) {
        let state = self.runtime.op_state();
        state
            .borrow_mut()
            .borrow_mut::<crate::websocket::client::Clients>()
            .close_all();
    }

    /// The link for socket `id` of a `101` response, or the error for a
    /// response that accepts a WebSocket where none was asked for.
    pub(super) fn link_socket(
        runtime: &mut JsRuntime,
        events: &Option<mpsc::Sender<SocketEvent>>,
        id: u32,
    ) -> Result<isola_core::websocket::SocketUpgrade, FunctionError> {
        let Some(events) = events else {
            return Err(FunctionError::new(
                ErrorCode::InvalidOutput,
                "the function answered with a WebSocket, but the request did not ask for one (Upgrade: websocket)",
            ));
        };
        let state = runtime.op_state();
        let mut state = state.borrow_mut();
        let link = state.borrow_mut::<Sockets>().link(id, events.clone());
        link.map(isola_core::websocket::SocketUpgrade::new)
            .ok_or_else(|| {
                FunctionError::new(
                    ErrorCode::InvalidOutput,
                    "the response's WebSocket was already returned in another response",
                )
            })
    }

    /// Closes every connection of this isolate with `code` and `reason`.
    pub fn close_sockets(&mut self, code: u16, reason: &str) {
        let state = self.runtime.op_state();
        state
            .borrow_mut()
            .borrow_mut::<Sockets>()
            .close_all(code, reason);
    }

    /// Connections open on this isolate.
    pub fn open_sockets(&mut self) -> usize {
        let state = self.runtime.op_state();
        let open = state.borrow_mut().borrow_mut::<Sockets>().open();
        open
    }

    /// Forgets socket `id`, whose connection ended.
    pub fn forget_socket(&mut self, id: u32) {
        let state = self.runtime.op_state();
        state.borrow_mut().borrow_mut::<Sockets>().forget(id);
    }

    /// Forgets the pairs the last invocation made and did not return.
    pub fn forget_unused_sockets(&mut self) {
        let state = self.runtime.op_state();
        state.borrow_mut().borrow_mut::<Sockets>().forget_unused();
    }

    /// Whether the event loop has work left (timers, fetches) to run.
    pub fn has_background_work(&self) -> bool {
        !self.idle && self.is_reusable()
    }

    /// Delivers what a client sent to socket `event.socket`, under the
    /// limits of one invocation ending at `deadline`; on a failure the
    /// isolate is broken (the caller closes its connections).
    pub async fn deliver(
        &mut self,
        socket: u32,
        frame: &WsFrame,
        deadline: Instant,
    ) -> EventReport {
        self.reset_for(deadline);
        let result = self.dispatch(socket, frame, deadline).await;
        let error = match result {
            Ok(tick) => {
                self.settle(tick);
                None
            }
            Err(error) => {
                self.broken = true;
                self.measure_memory();
                Some(if self.meter.wall_exceeded() {
                    wall_timeout(&self.source)
                } else {
                    self.classify(error)
                })
            }
        };
        self.charge_offloaded();
        let error = match error {
            None if self.meter.exceeded() => {
                self.broken = true;
                Some(self.classify(FunctionError::new(ErrorCode::CpuLimit, "")))
            }
            other => other,
        };
        EventReport {
            cpu_us: self.meter.used().as_micros() as u64,
            logs: self.take_logs(),
            error,
        }
    }

    /// Runs what listeners left behind (timers, fetches) for one turn: until
    /// the event loop is idle, or until it has run something after a wake,
    /// so that the host accounts each turn's CPU before the next; one turn
    /// may use at most `cpu_ms` (past it the isolate is broken). Safe to
    /// drop while it waits: what it used is then in
    /// [`Self::take_background_cpu`].
    pub async fn background(&mut self) -> EventReport {
        self.meter.reset(self.source.limits.cpu());
        // Timers may wait longer than an invocation's wall time: only CPU counts here.
        self.meter.set_wall_deadline(None);
        let Self {
            runtime,
            raw,
            meter,
            background_cpu,
            ..
        } = self;
        let raw = *raw;
        let mut polls = 0u32;
        let (ran, idle) = std::future::poll_fn(|cx| {
            polls += 1;
            let polled = entered(raw, meter, || {
                runtime.poll_event_loop(cx, PollEventLoopOptions::default())
            });
            *background_cpu = meter.used();
            match polled {
                Poll::Ready(done) => Poll::Ready((done, true)),
                Poll::Pending if polls > 1 => Poll::Ready((Ok(()), false)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        self.background_cpu = Duration::ZERO;
        self.idle = idle;
        self.charge_offloaded();
        let error = match ran {
            Ok(()) if !self.is_reusable() || self.meter.exceeded() => {
                Some(self.classify(FunctionError::new(ErrorCode::CpuLimit, "")))
            }
            Ok(()) => None,
            Err(error) => Some(self.classify(errors::from_core_error(error, Phase::Invoke))),
        };
        if error.is_some() {
            self.broken = true;
        }
        self.measure_memory();
        EventReport {
            cpu_us: self.meter.used().as_micros() as u64,
            logs: self.take_logs(),
            error,
        }
    }

    /// CPU a background turn used before it was dropped for an event
    /// (taken once).
    pub fn take_background_cpu(&mut self) -> Duration {
        std::mem::take(&mut self.background_cpu)
    }

    /// A fresh budget for one invocation or event ending at `deadline`:
    /// CPU, wall time, memory refusals, subrequests, KV operations and
    /// written bytes.
    pub(super) fn reset_for(&mut self, deadline: Instant) {
        self.meter.reset(self.source.limits.cpu());
        self.meter.set_wall_deadline(Some(deadline.into_std()));
        self.budget.clear_refused();
        self.runtime
            .op_state()
            .borrow()
            .borrow::<FetchBudget>()
            .reset();
        if let Some(kv_budget) = &self.kv_budget {
            kv_budget.refill();
        }
    }

    /// Calls the bootstrap's `socketEvent`, then one event-loop tick, in
    /// one metered slice.
    async fn dispatch(
        &mut self,
        socket: u32,
        frame: &WsFrame,
        deadline: Instant,
    ) -> Result<upkeep::Tick, FunctionError> {
        let Self {
            runtime,
            raw,
            meter,
            host,
            source,
            ..
        } = self;
        let run = async move {
            let called = {
                deno_core::scope!(scope, runtime);
                call_handler(scope, &host.socket_event, |scope| {
                    event_args(scope, socket, frame)
                })?
            };
            call::settled(runtime, called, deadline, source).await?;
            Ok(upkeep::tick(runtime))
        };
        Metered {
            raw: *raw,
            meter,
            inner: Box::pin(run),
        }
        .await
    }
}

/// `socketEvent`'s arguments: id, kind (0 text, 1 binary, 2 close), data,
/// code, reason.
fn event_args<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    socket: u32,
    frame: &WsFrame,
) -> Result<Vec<v8::Local<'s, v8::Value>>, FunctionError> {
    let id = v8::Integer::new_from_unsigned(scope, socket).into();
    let zero = v8::Integer::new(scope, 0).into();
    let empty = string_arg(scope, "")?;
    Ok(match frame {
        WsFrame::Message(WsMessage::Text(text)) => {
            let kind = v8::Integer::new(scope, 0).into();
            vec![id, kind, string_arg(scope, text)?, zero, empty]
        }
        WsFrame::Message(WsMessage::Binary(bytes)) => {
            let kind = v8::Integer::new(scope, 1).into();
            let store = v8::ArrayBuffer::new_backing_store_from_vec(bytes.clone()).make_shared();
            let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
            let data = v8::Uint8Array::new(scope, buffer, 0, bytes.len())
                .ok_or_else(|| FunctionError::new(ErrorCode::InvalidInput, "message too large"))?
                .into();
            vec![id, kind, data, zero, empty]
        }
        WsFrame::Close { code, reason } => {
            let kind = v8::Integer::new(scope, 2).into();
            let code = v8::Integer::new(scope, i32::from(*code)).into();
            let null = v8::null(scope).into();
            vec![id, kind, null, code, string_arg(scope, reason)?]
        }
    })
}
