//! Process-wide V8 initialisation.

use std::sync::Once;

/// Initialises the V8 platform. Call it once, first thing in `main`, before
/// tokio or any other thread starts: on hosts with memory protection keys, a
/// thread created earlier dies with `SEGV_PKUERR` the first time it runs
/// JavaScript (rusty_v8#2054). Later calls do nothing.
pub fn init_platform() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        deno_core::JsRuntime::init_platform(None);
    });
}
