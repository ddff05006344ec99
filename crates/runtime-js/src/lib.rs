//! isola's JavaScript runtime: functions in V8 isolates with hard limits.
//!
//! A function is one ES module (or several, with relative imports) whose
//! default export is either a JSON handler, `export default async (payload,
//! ctx) => value`, or a Workers-style object, `export default { fetch(request,
//! env, ctx) }`. The [`Executor`] runs invocations of such functions:
//!
//! - **Isolation.** Each function version gets its own isolates, created from
//!   a V8 startup snapshot of isola's bootstrap (Deno's web extensions plus
//!   isola's own) so a cold start costs a few milliseconds. User code sees the
//!   web platform and nothing of `Deno`.
//! - **Limits.** Heap and ArrayBuffer memory ([`memory`]), CPU time on the
//!   worker thread's own CPU clock, enforced by a watchdog ([`cpu`]), and wall
//!   time. A function that breaks one is terminated alone and its isolate is
//!   discarded; the node keeps serving.
//! - **Threads.** V8 isolates are single-threaded, so a fixed set of worker
//!   threads, each with a current-thread tokio runtime, pulls invocations from
//!   one queue. While an invocation awaits a timer or I/O its thread runs
//!   others. Warm isolates live in a per-thread LRU ([`pool`]).
//!
//! Call [`init_platform`] on the main thread before any other thread exists.

mod admission;
mod contained;
pub mod cpu;
mod errors;
mod executor;
mod extension;
mod isolate;
mod kv;
mod loader;
pub mod memory;
mod outbound;
pub mod permissions;
mod platform;
pub mod pool;
pub mod typescript;
mod websocket;

pub use executor::{Executor, ExecutorConfig};
pub use platform::init_platform;

/// The V8 startup snapshot made by `build.rs`.
static SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ISOLA_SNAPSHOT.bin"));

/// Sources of the lazily loaded extension scripts the snapshot left out.
static RESIDUAL_LAZY_JS: &[(&str, &str)] =
    include!(concat!(env!("OUT_DIR"), "/residual_lazy_js.rs"));
