//! CPU time and wall time of one Wasm run, and the store's epoch callback
//! that stops it at its limits.
//!
//! A run is a future (wasmtime's async API) that may move between the
//! runtime's threads from one poll to the next; [`Metered`] reads the
//! thread's CPU clock around each poll and adds what the poll cost to the
//! run's [`Meter`]. Every epoch tick, the store's callback compares the
//! meter (with the poll under way) with the CPU limit and the clock with
//! the wall deadline, and otherwise yields, so that a busy guest lets the
//! other runs of its thread take their turn.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::UpdateDeadline;

/// CPU time a run has used so far.
#[derive(Default, Debug)]
pub struct Meter {
    /// Nanoseconds of the polls that ended.
    used_ns: AtomicU64,
    /// The thread's CPU clock when the poll under way began (0: none).
    poll_started_ns: AtomicU64,
}

impl Meter {
    /// CPU time used, the poll under way included (when called on its
    /// thread, as the epoch callback is).
    pub fn used(&self) -> Duration {
        let mut used = self.used_ns.load(Ordering::Relaxed);
        let started = self.poll_started_ns.load(Ordering::Relaxed);
        if started != 0 {
            used += thread_cpu_ns().saturating_sub(started);
        }
        Duration::from_nanos(used)
    }
}

/// A future whose polls are charged to a [`Meter`].
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<Meter>,
}

impl<F: Future> Metered<F> {
    /// `inner`, its polls charged to `meter`.
    pub fn new(inner: F, meter: Arc<Meter>) -> Self {
        Self {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = thread_cpu_ns().max(1);
        self.meter.poll_started_ns.store(started, Ordering::Relaxed);
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_ns().saturating_sub(started);
        self.meter.poll_started_ns.store(0, Ordering::Relaxed);
        self.meter.used_ns.fetch_add(spent, Ordering::Relaxed);
        polled
    }
}

/// Why the epoch callback stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It used its CPU time.
    Cpu,
    /// Its wall-clock time ran out.
    Wall,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "CPU time limit reached",
            Self::Wall => "wall-clock limit reached",
        })
    }
}

impl std::error::Error for Stopped {}

/// What the epoch callback checks, for one run.
pub struct Deadlines {
    /// The run's meter.
    pub meter: Arc<Meter>,
    /// Its CPU limit.
    pub cpu: Duration,
    /// When its wall-clock time runs out.
    pub wall: Instant,
}

impl Deadlines {
    /// The callback's answer at a tick: stop the run, or yield and check
    /// again at the next tick.
    pub fn check(&self) -> wasmtime::Result<UpdateDeadline> {
        if self.meter.used() >= self.cpu {
            return Err(wasmtime::Error::new(Stopped::Cpu));
        }
        if Instant::now() >= self.wall {
            return Err(wasmtime::Error::new(Stopped::Wall));
        }
        Ok(UpdateDeadline::Yield(1))
    }
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    isola_core::clock::thread_cpu_time().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polls_are_charged_and_limits_stop() {
        let meter = Arc::new(Meter::default());
        let busy = async {
            // 20 ms of this thread's CPU (however long that takes on a
            // busy machine), then a sleep.
            let until = thread_cpu_ns() + 20_000_000;
            let mut spins = 0u64;
            while thread_cpu_ns() < until {
                spins = std::hint::black_box(spins + 1);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        };
        Metered::new(busy, meter.clone()).await;
        let used = meter.used();
        // The spin is charged, the sleep is not.
        assert!(used >= Duration::from_millis(20), "{used:?}");
        assert!(used < Duration::from_millis(45), "{used:?}");
        let over = Deadlines {
            meter: meter.clone(),
            cpu: Duration::from_millis(1),
            wall: Instant::now() + Duration::from_secs(1),
        };
        let stopped = over.check().err().expect("stopped");
        assert_eq!(stopped.downcast_ref::<Stopped>(), Some(&Stopped::Cpu));
        let late = Deadlines {
            meter,
            cpu: Duration::from_secs(1),
            wall: Instant::now(),
        };
        let stopped = late.check().err().expect("stopped");
        assert_eq!(stopped.downcast_ref::<Stopped>(), Some(&Stopped::Wall));
    }
}
