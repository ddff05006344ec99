//! Who gets in, and where: the node-wide memory admission and the
//! quarantine for functions that break their limits.
//!
//! A function that broke its CPU, memory or wall-clock limit recently runs
//! on a quarantine worker thread of its own, at a lower OS priority, so that
//! the functions that behave keep their latency while it burns its budget.

use isola_core::ErrorCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub use isola_core::admission::{physical_memory_mb, Admission, Admitted};

/// Function versions (by id) marked until some time: bounded in size, and
/// free to ask about while empty (no lock), since it is asked on every
/// invocation and usually holds nothing or little.
#[derive(Default)]
pub struct FunctionSet {
    marked: RwLock<HashMap<String, Option<Instant>>>,
    len: AtomicUsize,
}

impl FunctionSet {
    const MAX: usize = 10_000;

    /// Marks `id` until `until` (`None`: for good); past the bound, entries
    /// that expired go first, then all.
    pub fn mark(&self, id: &str, until: Option<Instant>) {
        let mut marked = self.marked.write().unwrap();
        if marked.len() >= Self::MAX {
            let now = Instant::now();
            marked.retain(|_, until| until.is_none_or(|t| t > now));
            if marked.len() >= Self::MAX {
                marked.clear();
            }
        }
        marked.insert(id.to_string(), until);
        self.len.store(marked.len(), Ordering::Relaxed);
    }

    /// Whether `id` is marked now.
    pub fn holds(&self, id: &str) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let marked = self.marked.read().unwrap();
        marked
            .get(id)
            .is_some_and(|until| until.is_none_or(|t| t > Instant::now()))
    }
}

/// Functions that broke a limit recently: they run in quarantine.
#[derive(Default)]
pub struct Quarantine(FunctionSet);

impl Quarantine {
    /// How long a function stays after its last broken limit.
    pub const STAY: Duration = Duration::from_secs(60);

    /// Whether an outcome means the function broke one of its limits: its
    /// CPU or memory, or its wall time while it kept its thread busy (at
    /// least half that time on the CPU). A function that ran out of time
    /// waiting (a slow upstream), or whose caller gave up on a long queue,
    /// burnt nobody's thread.
    pub fn breaks_limit(outcome: &isola_core::Outcome) -> bool {
        let Err(error) = &outcome.result else {
            return false;
        };
        let metrics = &outcome.metrics;
        match error.code {
            ErrorCode::CpuLimit | ErrorCode::MemoryLimit => true,
            ErrorCode::WallTimeout => {
                metrics.cpu_us > 0 && metrics.cpu_us * 2 >= metrics.duration_us
            }
            _ => false,
        }
    }

    /// Puts (or keeps) `id` in quarantine.
    pub fn admit(&self, id: &str) {
        self.0.mark(id, Some(Instant::now() + Self::STAY));
    }

    /// Whether `id` is in quarantine now.
    pub fn holds(&self, id: &str) -> bool {
        self.0.holds(id)
    }
}

/// Lowers the calling thread's scheduling priority (Linux: per thread).
pub fn lower_thread_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn limit_breakers_are_held_for_a_while() {
        let quarantine = Quarantine::default();
        assert!(!quarantine.holds("f"));
        quarantine.admit("f");
        assert!(quarantine.holds("f"));
        assert!(!quarantine.holds("g"));
        let failed = |code, cpu_us, duration_us| {
            let mut outcome = isola_core::Outcome::failed(isola_core::FunctionError::new(code, ""));
            outcome.metrics.cpu_us = cpu_us;
            outcome.metrics.duration_us = duration_us;
            outcome
        };
        assert!(Quarantine::breaks_limit(&failed(ErrorCode::CpuLimit, 0, 0)));
        assert!(!Quarantine::breaks_limit(&failed(
            ErrorCode::UncaughtException,
            9,
            9
        )));
        // Out of time while busy on its thread, or while it waited.
        assert!(Quarantine::breaks_limit(&failed(
            ErrorCode::WallTimeout,
            900,
            1000
        )));
        assert!(!Quarantine::breaks_limit(&failed(
            ErrorCode::WallTimeout,
            10,
            1000
        )));
        assert!(!Quarantine::breaks_limit(&failed(
            ErrorCode::WallTimeout,
            0,
            0
        )));
    }

    #[test]
    fn marks_end_when_they_expire_and_the_set_stays_bounded() {
        let set = FunctionSet::default();
        set.mark("gone", Some(Instant::now()));
        set.mark("kept", None);
        assert!(!set.holds("gone"));
        assert!(set.holds("kept"));
        for i in 0..FunctionSet::MAX + 5 {
            set.mark(&format!("f{i}"), None);
        }
        assert!(set.marked.read().unwrap().len() <= FunctionSet::MAX);
    }

    #[test]
    fn admission_refuses_past_its_budget_and_releases_on_drop() {
        let admission = Arc::new(Admission::new(300));
        let first = admission.admit(128).unwrap();
        let _second = admission.admit(128).unwrap();
        assert!(admission.admit(128).is_none());
        drop(first);
        assert!(admission.admit(128).is_some());
    }
}
