//! Memory limits for an isolate: the V8 heap limit with a near-limit
//! callback, and a counting ArrayBuffer allocator, so that external memory
//! counts against the function's limit too.
//!
//! Memory that native code makes for the function is charged as well
//! ([`MemoryGuard`]): buffers that ops hand to JavaScript (`TextEncoder`,
//! decompression, blob reads) are in V8's external-memory count though they
//! bypass the allocator, and blob parts held in Rust are added by the
//! [`LimitedBlobStore`]. While the isolate runs, the CPU watchdog interrupts
//! it every tick to compare that total with the limit
//! ([`check_memory_interrupt`]).

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

/// Native memory charged to one isolate, and whether it broke the limit.
#[derive(Debug)]
pub struct MemoryGuard {
    limit: usize,
    /// Bytes held in Rust for the function (blob parts).
    extra: AtomicUsize,
    exceeded: AtomicBool,
}

impl MemoryGuard {
    /// A guard for an isolate limited to `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            extra: AtomicUsize::new(0),
            exceeded: AtomicBool::new(false),
        })
    }

    /// Bytes held in Rust for the function.
    pub fn extra(&self) -> usize {
        self.extra.load(Ordering::Relaxed)
    }

    /// Whether native memory went past the limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Native memory of the isolate: V8's external memory (every
    /// ArrayBuffer's backing store) and what Rust holds for it.
    pub fn native_in_use(&self, isolate: &mut v8::Isolate) -> usize {
        isolate.get_heap_statistics().external_memory() + self.extra()
    }

    /// Charges `len` bytes held in Rust; past the limit, the isolate is
    /// terminated (by the watchdog).
    pub fn charge(&self, len: usize) {
        let total = self.extra.fetch_add(len, Ordering::Relaxed) + len;
        if total > self.limit {
            self.fail();
        }
    }

    /// Releases `len` bytes charged earlier.
    pub fn release(&self, len: usize) {
        self.extra.fetch_sub(len, Ordering::Relaxed);
    }

    /// Marks the limit broken; the watchdog terminates the isolate on its
    /// next tick (it checks this flag for every running isolate).
    fn fail(&self) {
        self.exceeded.store(true, Ordering::Relaxed);
    }

    /// Whether the isolate holds more than its limit: its native memory
    /// alone, or its heap and native memory together when the native part
    /// is a sizable share (over a quarter of the limit). A heap that is
    /// nearly all of it is left to V8's own heap limit: collecting garbage
    /// from an interrupt while the heap is at its limit makes V8 abort.
    /// So together they hold at most 1.25 times the limit.
    fn over(&self, isolate: &mut v8::Isolate) -> bool {
        let stats = isolate.get_heap_statistics();
        let native = stats.external_memory() + self.extra();
        native > self.limit
            || (native > self.limit / 4 && stats.used_heap_size() + native > self.limit)
    }

    /// Checks the isolate's memory (see `over`) against the one limit,
    /// after a full collection if it looks too high: garbage counts until
    /// collected.
    pub fn check(&self, isolate: &mut v8::Isolate) {
        if !self.over(isolate) {
            return;
        }
        isolate.low_memory_notification();
        if self.over(isolate) {
            // Terminating from inside an interrupt does not take: the
            // watchdog does it from its own thread on its next tick.
            self.fail();
        }
    }
}

/// The interrupt the CPU watchdog requests on a running isolate: `data` is
/// the isolate's [`MemoryGuard`].
///
/// # Safety
/// `data` must point to a `MemoryGuard` that outlives the isolate.
pub unsafe extern "C" fn check_memory_interrupt(raw: v8::UnsafeRawIsolatePtr, data: *mut c_void) {
    // SAFETY: V8 calls this on the isolate's thread, with the isolate entered.
    let mut isolate = unsafe { v8::Isolate::from_raw_isolate_ptr(raw) };
    // SAFETY: the caller guarantees `data` outlives the isolate.
    let guard = unsafe { &*(data as *const MemoryGuard) };
    guard.check(&mut isolate);
}

/// deno_web's blob store, with every part charged to the function's
/// [`MemoryGuard`] while it exists.
#[derive(Debug)]
pub struct LimitedBlobStore {
    inner: deno_web::BlobStore,
    guard: Arc<MemoryGuard>,
}

impl LimitedBlobStore {
    /// A store charging `guard`.
    pub fn new(guard: Arc<MemoryGuard>) -> Arc<Self> {
        Arc::new(Self {
            inner: deno_web::BlobStore::default(),
            guard,
        })
    }
}

type Part = Arc<dyn deno_web::BlobPart + Send + Sync>;

impl deno_web::BlobStoreTrait for LimitedBlobStore {
    fn insert_part(&self, part: Part) -> uuid::Uuid {
        self.guard.charge(part.size());
        self.inner.insert_part(part)
    }

    fn get_part(&self, id: &uuid::Uuid) -> Option<Part> {
        self.inner.get_part(id)
    }

    fn remove_part(&self, id: &uuid::Uuid) -> Option<Part> {
        let part = self.inner.remove_part(id)?;
        self.guard.release(part.size());
        Some(part)
    }

    fn get_object_url(&self, url: deno_core::url::Url) -> Option<Arc<deno_web::Blob>> {
        self.inner.get_object_url(url)
    }

    fn insert_object_url(
        &self,
        blob: deno_web::Blob,
        maybe_location: Option<deno_core::url::Url>,
    ) -> deno_core::url::Url {
        self.inner.insert_object_url(blob, maybe_location)
    }

    fn remove_object_url(&self, url: &deno_core::url::Url) {
        self.inner.remove_object_url(url)
    }

    fn clear(&self) {
        self.inner.clear()
    }
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
