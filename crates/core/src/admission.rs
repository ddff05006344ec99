//! The node's memory admission, shared by every runtime: an invocation
//! reserves its `memory_mb` before it runs and gives it back when it is
//! done, and one that does not fit is refused (`unavailable`) rather than
//! run into memory the node does not have.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The machine's memory in MiB (4 GiB if unknown).
pub fn physical_memory_mb() -> usize {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 4096;
    }
    (pages as usize).saturating_mul(page as usize) >> 20
}

/// Memory reserved by the invocations under way, in MiB.
pub struct Admission {
    reserved: AtomicUsize,
    max: usize,
}

/// One invocation's reservation, released when dropped: after the worker
/// is done with the invocation, what it left running included.
pub struct Admitted {
    admission: Arc<Admission>,
    mb: usize,
}

impl Admission {
    /// A budget of `max` MiB.
    pub fn new(max: usize) -> Self {
        Self {
            reserved: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// Reserves `mb`, or `None` when it does not fit.
    pub fn admit(self: &Arc<Self>, mb: usize) -> Option<Admitted> {
        let mut reserved = self.reserved.load(Ordering::Relaxed);
        loop {
            let next = reserved + mb;
            if next > self.max {
                return None;
            }
            match self.reserved.compare_exchange_weak(
                reserved,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Admitted {
                        admission: self.clone(),
                        mb,
                    })
                }
                Err(actual) => reserved = actual,
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.reserved.fetch_sub(self.mb, Ordering::AcqRel);
    }
}
