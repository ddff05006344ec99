//! Process-wide V8 initialisation.

use std::sync::Once;

/// Initialises the V8 platform. Call it once, first thing in `main`, before
/// tokio or any other thread starts: on hosts with memory protection keys, a
/// thread created earlier dies with `SEGV_PKUERR` the first time it runs
/// JavaScript (rusty_v8#2054). Later calls do nothing.
///
/// V8 runs single-threaded (`--single-threaded`): see the comment inside.
pub fn init_platform() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // All of an isolate's V8 work (garbage collection, optimising
        // compilation) runs on its own thread: charged to its CPU limit, and
        // at the priority of that thread (lower in quarantine), instead of on
        // helper threads every function shares for free.
        deno_core::v8::V8::set_flags_from_string("--single-threaded");
        // Buffers of 1 MiB and more are mapped and unmapped, not kept in
        // malloc's arenas: memory a function held returns to the system
        // when it is freed (glibc otherwise raises this threshold as it sees
        // large frees, and keeps them).
        // SAFETY: mallopt has no preconditions.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        deno_core::JsRuntime::init_platform(None);
    });
}
