//! CPU-time limits measured on the executing thread's own CPU clock.
//!
//! Every worker thread owns a [`CpuSlot`]. While an isolate runs on that
//! thread, the slot is *armed* with the isolate's handle and the CPU time
//! its slice may use; one [`CpuWatchdog`] thread for the whole process
//! reads the threads' clocks (`pthread_getcpuclockid`) every millisecond
//! and terminates an isolate that has used its budget. Time a thread
//! spends waiting (timers, I/O, other invocations) is not on its CPU clock,
//! so it is never charged. A [`CpuMeter`] adds up the slices of one
//! invocation.
//!
//! Reading a thread's CPU clock is a system call (about a microsecond
//! here, a tenth of a trivial request's whole cost), so a slice does not
//! read it up front unless its budget is nearly spent. It notes the
//! wall-clock time instead. The slice's CPU start is then bounded from
//! below by the watchdog, at each tick a sample of every thread's clock:
//! the first time it sees the slice armed, it takes as the start the later
//! of its last sample before the slice began and its reading now less all
//! the wall time since the slice began. Neither is later than the true
//! start, so a slice is never charged less than it ran; the first is at
//! most a tick of the thread's own CPU early, so time the thread was
//! stopped (a CPU quota's throttling, a paused VM) is not charged. A slice
//! shorter than two ticks that the watchdog never saw (nearly all) is
//! charged its wall time, which its CPU time cannot exceed; any other is
//! charged its CPU time since its start, read once at its end (and at most
//! its wall time).
//!
//! The Wasm runtime reads the CPU clock at both ends of each poll
//! (`isola-runtime-wasm`'s meter): its figures are exact, these at most
//! about a tick above.
//!
//! The same watchdog enforces the invocation's wall-clock deadline while its
//! isolate runs: a thread blocked inside JavaScript (or inside an op it
//! called) cannot run the timer that would otherwise end the invocation, so
//! the deadline must be watched from outside the thread.

use crate::memory::{check_memory_interrupt, MemoryGuard};
use deno_core::v8;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the watchdog looks at armed threads.
const TICK: Duration = Duration::from_millis(1);

/// How long a terminated slice may go on before it is reported as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(2);

use isola_core::clock::clock_time;
pub use isola_core::clock::thread_cpu_time;

struct Armed {
    /// When the watchdog first terminated this slice, if it has.
    terminated: Option<Instant>,
    /// Whether a slice that outlived its termination was reported.
    reported: bool,
    /// When the slice began, on the wall clock.
    began: Instant,
    /// CPU time the slice may use.
    budget: Duration,
    /// The thread's CPU clock at the slice's start, as the watchdog
    /// estimated it when it first saw the slice (never later than the
    /// true start); `None` until then.
    cpu_start: Option<Duration>,
    wall_deadline: Option<Instant>,
    target: Arc<Target>,
}

/// What a slot terminates and checks while armed: one per isolate, shared
/// by its meter and the watchdog.
struct Target {
    handle: v8::IsolateHandle,
    fired: Fired,
    memory: Option<Arc<MemoryGuard>>,
}

/// Which limit the watchdog terminated an isolate for, if any.
#[derive(Debug, Default)]
pub struct Fired {
    cpu: AtomicBool,
    wall: AtomicBool,
}

/// A worker thread's place in the watchdog: its CPU clock and, while an
/// isolate runs on it, what to terminate and when.
pub struct CpuSlot {
    clock: libc::clockid_t,
    state: Mutex<SlotState>,
    watchdog: Arc<Shared>,
}

#[derive(Default)]
struct SlotState {
    armed: Option<Armed>,
    /// The watchdog's last reading of the thread's CPU clock, and a wall
    /// time no earlier than when it was read.
    sample: Option<(Duration, Instant)>,
}

impl SlotState {
    /// The CPU clock at some moment no later than `began`, if sampled.
    fn cpu_before(&self, began: Instant) -> Option<Duration> {
        self.sample
            .filter(|(_, at)| *at <= began)
            .map(|(cpu, _)| cpu)
    }
}

/// A slice whose budget left is below this reads its CPU start exactly,
/// so that the estimate's slack cannot end it before its limit.
const EXACT_BELOW: Duration = Duration::from_millis(3);

/// An unseen slice shorter than this is charged its wall time.
const SHORT_SLICE: Duration = Duration::from_millis(2);

impl CpuSlot {
    /// Arms the slot for a slice that began at `began`: terminate `handle`
    /// once this thread has spent `budget` of CPU time since then or the
    /// wall clock passes `wall_deadline`, and say which in `fired`.
    /// `cpu_start` is the thread's CPU clock at `began`, if it was read.
    fn arm(
        &self,
        began: Instant,
        (budget, cpu_start): (Duration, Option<Duration>),
        wall_deadline: Option<Instant>,
        target: Arc<Target>,
    ) {
        self.state.lock().unwrap().armed = Some(Armed {
            terminated: None,
            reported: false,
            began,
            budget,
            cpu_start,
            wall_deadline,
            target,
        });
        self.watchdog.wake();
    }

    /// Disarms the slot. After it returns, the watchdog will not terminate
    /// the isolate for this slice any more. Returns the CPU time the slice
    /// that began at `began` is charged.
    fn disarm(&self, began: Instant) -> Duration {
        let (start, before) = {
            let mut state = self.state.lock().unwrap();
            let start = state.armed.take().and_then(|armed| armed.cpu_start);
            (start, state.cpu_before(began))
        };
        let wall = began.elapsed();
        match start.or(before.filter(|_| wall >= SHORT_SLICE)) {
            // CPU time cannot exceed wall time.
            Some(start) => thread_cpu_time().saturating_sub(start).min(wall),
            None => wall,
        }
    }

    fn is_armed(&self) -> bool {
        self.state.lock().unwrap().armed.is_some()
    }

    fn check(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        // Read in this order: the sample's wall time is no earlier than
        // its CPU reading.
        let cpu_now = clock_time(self.clock);
        let now = Instant::now();
        let before = state.armed.as_ref().and_then(|a| state.cpu_before(a.began));
        state.sample = Some((cpu_now, now));
        let Some(current) = state.armed.as_mut() else {
            return false;
        };
        let memory = current.target.memory.as_ref().is_some_and(|m| m.exceeded());
        let began = current.began;
        let start = *current.cpu_start.get_or_insert_with(|| {
            let by_wall = cpu_now.saturating_sub(now.saturating_duration_since(began));
            before.map_or(by_wall, |sampled| sampled.max(by_wall))
        });
        let cpu = cpu_now.saturating_sub(start) >= current.budget;
        let wall = current.wall_deadline.is_some_and(|d| now >= d);
        if memory || cpu || wall {
            if current.terminated.is_none() {
                // The first limit broken names the error (the memory
                // guard keeps its own flag).
                current.terminated = Some(Instant::now());
                if !memory {
                    let flag = if cpu {
                        &current.target.fired.cpu
                    } else {
                        &current.target.fired.wall
                    };
                    flag.store(true, Ordering::SeqCst);
                }
            }
            // Again on every tick until the slice ends: native code that
            // calls back into JavaScript under a TryCatch can swallow a
            // termination, and the isolate must not run on.
            current.target.handle.terminate_execution();
            let since = current.terminated.map_or(Duration::ZERO, |t| t.elapsed());
            if since > STUCK_AFTER && !current.reported {
                current.reported = true;
                tracing::error!(
                    ?since,
                    "an isolate keeps running after being terminated: its worker thread is stuck"
                );
            }
        } else if let Some(guard) = &current.target.memory {
            // Native memory is checked on the isolate's own thread.
            let data = Arc::as_ptr(guard) as *mut std::ffi::c_void;
            current
                .target
                .handle
                .request_interrupt(check_memory_interrupt, data);
        }
        true
    }
}

#[derive(Default)]
struct Shared {
    slots: Mutex<Vec<Arc<CpuSlot>>>,
    /// Set while the watchdog waits on `wakeup`; read without the lock on
    /// every arm, so that arming costs no lock while the watchdog ticks.
    parked: AtomicBool,
    sleeping: Mutex<bool>,
    wakeup: Condvar,
}

impl Shared {
    fn wake(&self) {
        if !self.parked.load(Ordering::SeqCst) {
            return;
        }
        let mut sleeping = self.sleeping.lock().unwrap();
        if *sleeping {
            *sleeping = false;
            self.parked.store(false, Ordering::SeqCst);
            self.wakeup.notify_one();
        }
    }
}

/// The watchdog thread that enforces CPU limits on every worker thread.
#[derive(Clone)]
pub struct CpuWatchdog {
    shared: Arc<Shared>,
}

impl CpuWatchdog {
    /// Starts the watchdog thread.
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("isola-cpu-watchdog".into())
            .spawn(move || watch(thread_shared))
            .expect("spawning the CPU watchdog thread");
        Self { shared }
    }

    /// Registers the calling thread and returns its slot.
    pub fn register_current_thread(&self) -> Arc<CpuSlot> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid; `clock` is a valid out-pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0, "pthread_getcpuclockid failed");
        let slot = Arc::new(CpuSlot {
            clock,
            state: Mutex::default(),
            watchdog: self.shared.clone(),
        });
        self.shared.slots.lock().unwrap().push(slot.clone());
        slot
    }
}

fn watch(shared: Arc<Shared>) {
    let mut idle_ticks = 0u32;
    loop {
        let slots = shared.slots.lock().unwrap().clone();
        // Every slot is sampled, armed or not: the samples bound the start
        // of the next slice on each thread.
        let any_armed = slots.iter().fold(false, |any, slot| slot.check() | any);
        idle_ticks = if any_armed { 0 } else { idle_ticks + 1 };
        if idle_ticks > 100 {
            // Nothing has run for a while: sleep until a slot is armed.
            let mut sleeping = shared.sleeping.lock().unwrap();
            *sleeping = true;
            shared.parked.store(true, Ordering::SeqCst);
            // A slot armed before `parked` was visible: look once more.
            if shared
                .slots
                .lock()
                .unwrap()
                .iter()
                .any(|slot| slot.is_armed())
            {
                *sleeping = false;
                shared.parked.store(false, Ordering::SeqCst);
            }
            while *sleeping {
                sleeping = shared.wakeup.wait(sleeping).unwrap();
            }
            idle_ticks = 0;
        } else {
            std::thread::sleep(TICK);
        }
    }
}

/// The CPU clocks of a worker's blocking threads (where ops such as
/// WebCrypto hand their work): their total CPU time, so that an offloaded
/// call can be charged what those threads spent while it ran, not the wall
/// time it waited.
#[derive(Default)]
pub struct BlockingClocks {
    threads: Mutex<std::collections::HashMap<std::thread::ThreadId, libc::clockid_t>>,
    /// CPU time of blocking threads that have ended, in nanoseconds.
    retired: std::sync::atomic::AtomicU64,
}

impl BlockingClocks {
    /// Registers the calling (blocking) thread; for `on_thread_start`.
    pub fn thread_started(&self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid; `clock` is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0 {
            let id = std::thread::current().id();
            self.threads.lock().unwrap().insert(id, clock);
        }
    }

    /// Retires the calling thread's clock; for `on_thread_stop`.
    pub fn thread_stopped(&self) {
        let mut threads = self.threads.lock().unwrap();
        if threads.remove(&std::thread::current().id()).is_some() {
            let spent = thread_cpu_time().as_nanos() as u64;
            self.retired.fetch_add(spent, Ordering::Relaxed);
        }
    }

    /// CPU time all the blocking threads have spent so far.
    pub fn total(&self) -> Duration {
        let threads = self.threads.lock().unwrap();
        let live: Duration = threads.values().map(|clock| clock_time(*clock)).sum();
        live + Duration::from_nanos(self.retired.load(Ordering::Relaxed))
    }
}

/// Adds up the CPU time of one invocation across the slices in which its
/// isolate runs, and arms the thread's slot for each slice.
pub struct CpuMeter {
    slot: Arc<CpuSlot>,
    target: Arc<Target>,
    limit: Duration,
    used: Duration,
    wall_deadline: Option<Instant>,
    /// CPU time spent for the invocation off its thread, charged at the
    /// start of the next slice.
    offloaded: std::rc::Rc<std::cell::Cell<Duration>>,
}

impl CpuMeter {
    /// A meter allowing `limit` of CPU time to the isolate behind `handle`.
    pub fn new(slot: Arc<CpuSlot>, handle: v8::IsolateHandle, limit: Duration) -> Self {
        Self {
            slot,
            target: Arc::new(Target {
                handle,
                fired: Fired::default(),
                memory: None,
            }),
            limit,
            used: Duration::ZERO,
            wall_deadline: None,
            offloaded: Default::default(),
        }
    }

    /// Has the watchdog check `guard` on every tick of a slice.
    /// Call before the first slice.
    pub fn watch_memory(&mut self, guard: Arc<MemoryGuard>) {
        Arc::get_mut(&mut self.target)
            .expect("memory is watched before the first slice")
            .memory = Some(guard);
    }

    /// Where ops add CPU time spent for the invocation on other threads.
    pub fn offloaded(&self) -> std::rc::Rc<std::cell::Cell<Duration>> {
        self.offloaded.clone()
    }

    /// Runs `f` as one slice: armed, timed, and charged to this meter.
    pub fn slice<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let offloaded = self.offloaded.take();
        if !offloaded.is_zero() {
            self.charge(offloaded);
        }
        let remaining = self.limit.saturating_sub(self.used);
        // Near the limit, the start is read exactly (see the module's doc).
        let exact = (remaining < EXACT_BELOW).then(thread_cpu_time);
        let began = Instant::now();
        self.slot.arm(
            began,
            (remaining, exact),
            self.wall_deadline,
            self.target.clone(),
        );
        let out = f();
        self.used += self.slot.disarm(began);
        if self.used > self.limit {
            // Past the limit between two watchdog ticks: treat it as fired.
            self.target.fired.cpu.store(true, Ordering::SeqCst);
        }
        out
    }

    /// Adds CPU time spent for this invocation outside its slices (work an
    /// op handed to another thread). Past the limit, the next slice's
    /// budget is zero, so the watchdog ends it on its first tick, as if
    /// the isolate's own thread had spent the time.
    pub fn charge(&mut self, extra: Duration) {
        self.used += extra;
        if self.used > self.limit {
            self.target.fired.cpu.store(true, Ordering::SeqCst);
        }
    }

    /// Sets the wall-clock deadline the watchdog enforces while the isolate
    /// runs (`None`: only the CPU limit).
    pub fn set_wall_deadline(&mut self, deadline: Option<Instant>) {
        self.wall_deadline = deadline;
    }

    /// CPU time charged so far.
    pub fn used(&self) -> Duration {
        self.used
    }

    /// Whether the limit was exceeded.
    pub fn exceeded(&self) -> bool {
        self.target.fired.cpu.load(Ordering::SeqCst)
    }

    /// Whether the watchdog ended a slice at the wall-clock deadline.
    pub fn wall_exceeded(&self) -> bool {
        self.target.fired.wall.load(Ordering::SeqCst)
    }

    /// Starts a new budget, e.g. for the next invocation on the same isolate.
    pub fn reset(&mut self, limit: Duration) {
        self.limit = limit;
        self.used = Duration::ZERO;
        // No slice is armed now, so the watchdog cannot set them meanwhile.
        self.target.fired.cpu.store(false, Ordering::SeqCst);
        self.target.fired.wall.store(false, Ordering::SeqCst);
        self.offloaded.set(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_advances_with_work_not_with_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - start;
        assert!(
            slept < Duration::from_millis(15),
            "sleep was charged: {slept:?}"
        );
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - start < Duration::from_millis(20) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_time() - start >= Duration::from_millis(20));
    }
}
