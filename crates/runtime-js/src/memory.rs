//! Memory limits for an isolate: the V8 heap limit with a near-limit
//! callback, and a counting ArrayBuffer allocator, so that external memory
//! counts against the function's limit too.

use deno_core::v8;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of ArrayBuffer memory an isolate may hold, and whether a request
/// was refused.
#[derive(Debug)]
pub struct ArrayBufferBudget {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicBool,
}

impl ArrayBufferBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicBool::new(false),
        })
    }

    /// Bytes currently allocated.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether an allocation was refused since the last [`Self::clear_refused`].
    pub fn was_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Forgets earlier refusals (at the start of each invocation).
    pub fn clear_refused(&self) {
        self.refused.store(false, Ordering::Relaxed);
    }

    fn reserve(&self, len: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(len).filter(|n| *n <= self.limit) else {
                self.refused.store(true, Ordering::Relaxed);
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => used = actual,
            }
        }
    }

    fn release(&self, len: usize) {
        self.used.fetch_sub(len, Ordering::Relaxed);
    }
}

unsafe extern "C" fn allocate(budget: &ArrayBufferBudget, len: usize) -> *mut c_void {
    if !budget.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: calloc with a non-zero size; null is handled.
    let ptr = unsafe { libc::calloc(len.max(1), 1) };
    if ptr.is_null() {
        budget.release(len);
    }
    ptr
}

unsafe extern "C" fn allocate_uninitialized(budget: &ArrayBufferBudget, len: usize) -> *mut c_void {
    if !budget.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: malloc with a non-zero size; null is handled.
    let ptr = unsafe { libc::malloc(len.max(1)) };
    if ptr.is_null() {
        budget.release(len);
    }
    ptr
}

unsafe extern "C" fn free(budget: &ArrayBufferBudget, data: *mut c_void, len: usize) {
    // SAFETY: `data` came from calloc/malloc above.
    unsafe { libc::free(data) };
    budget.release(len);
}

unsafe extern "C" fn drop_budget(budget: *const ArrayBufferBudget) {
    // SAFETY: the pointer was made by `Arc::into_raw` in `allocator`.
    drop(unsafe { Arc::from_raw(budget) });
}

static VTABLE: v8::RustAllocatorVtable<ArrayBufferBudget> = v8::RustAllocatorVtable {
    allocate,
    allocate_uninitialized,
    free,
    drop: drop_budget,
};

/// An ArrayBuffer allocator that draws from `budget` and returns null (a
/// `RangeError` in JavaScript) once it is spent.
pub fn allocator(budget: &Arc<ArrayBufferBudget>) -> v8::UniqueRef<v8::Allocator> {
    let handle = Arc::into_raw(budget.clone());
    // SAFETY: `handle` stays valid until V8 calls `drop_budget`.
    unsafe { v8::new_rust_allocator(handle, &VTABLE) }
}

/// Extra heap granted after the near-limit callback fires, so that V8 can
/// unwind the terminated script instead of aborting the process.
pub fn heap_headroom(current_limit: usize) -> usize {
    current_limit + (current_limit / 2).max(16 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_its_limit_and_recovers_on_release() {
        let budget = ArrayBufferBudget::new(100);
        assert!(budget.reserve(60));
        assert!(!budget.reserve(41));
        assert!(budget.was_refused());
        budget.release(60);
        assert!(budget.reserve(100));
        assert_eq!(budget.used(), 100);
        budget.clear_refused();
        assert!(!budget.was_refused());
    }

    #[test]
    fn headroom_always_grows_the_limit() {
        assert!(heap_headroom(1 << 20) >= (1 << 20) + (16 << 20));
        assert_eq!(heap_headroom(128 << 20), (128 << 20) + (64 << 20));
    }
}
