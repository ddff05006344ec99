//! The `isola_runtime` deno_core extension: isola's bootstrap JavaScript and
//! the few ops it exposes on purpose.
//!
//! This file is compiled twice: into the library, and into `build.rs`
//! (through `#[path]`), where it makes the startup snapshot. Both must see
//! exactly the same extensions, in the same order, with the same ops and op
//! middleware, or the snapshot will not load.

use deno_core::{extension, op2, OpDecl, OpState};
use std::cell::RefCell;
use std::rc::Rc;

/// Console lines captured during the current invocation, as
/// `(level, message)`; level as given by deno_web's `Console`: debug 0,
/// log/info 1, warn 2, error 3, trace 4.
#[derive(Default, Clone)]
pub struct ConsoleBuffer(pub Rc<RefCell<ConsoleLines>>);

/// The captured lines and how many bytes they hold.
#[derive(Default)]
pub struct ConsoleLines {
    /// `(level, message)` in order.
    pub lines: Vec<(u8, String)>,
    /// Total bytes kept, to bound memory.
    pub bytes: usize,
    /// Lines dropped because the buffer was full.
    pub dropped: usize,
}

/// Most console output kept for one invocation.
pub const MAX_CONSOLE_BYTES: usize = 256 * 1024;

#[op2(fast)]
fn op_isola_log(state: &mut OpState, #[smi] level: u32, #[string] message: &str) {
    let buffer = state.borrow::<ConsoleBuffer>().0.clone();
    let mut buffer = buffer.borrow_mut();
    let message = message.strip_suffix('\n').unwrap_or(message);
    if buffer.bytes + message.len() > MAX_CONSOLE_BYTES {
        buffer.dropped += 1;
        return;
    }
    buffer.bytes += message.len();
    buffer.lines.push((level.min(4) as u8, message.to_owned()));
}

/// Ops that a sandboxed function must never reach: disabled everywhere.
const DISABLED_OPS: &[&str] = &[
    // Accepts a user proxy, CA certificates, local address and Host override.
    "op_fetch_custom_client",
    // Prints to the host's stdout/stderr, bypassing the captured console.
    "op_print",
];

/// Disables the ops listed in [`DISABLED_OPS`].
pub fn op_middleware(op: OpDecl) -> OpDecl {
    if DISABLED_OPS.contains(&op.name) {
        op.disable()
    } else {
        op
    }
}

extension!(
    isola_runtime,
    deps = [deno_webidl, deno_web, deno_crypto, deno_fetch],
    ops = [op_isola_log],
    esm_entry_point = "ext:isola_runtime/bootstrap.js",
    esm = [dir "js", "bootstrap.js"],
    lazy_loaded_js = [dir "js", "ext:deno_net/02_tls.js" = "stub_tls.js"],
    options = { permissions: deno_permissions::PermissionsContainer },
    middleware = op_middleware,
    state = |state, options| {
        state.put(options.permissions);
        state.put(ConsoleBuffer::default());
    },
);

/// The full, ordered list of extensions every isola isolate runs with. The
/// snapshot is made from this list; runtimes are created with it again.
pub fn extensions(
    permissions: deno_permissions::PermissionsContainer,
) -> Vec<deno_core::Extension> {
    vec![
        deno_webidl::deno_webidl::init(),
        deno_web::deno_web::init(
            std::sync::Arc::new(deno_web::BlobStore::default()),
            None,
            false,
            deno_web::InMemoryBroadcastChannel::default(),
        ),
        deno_crypto::deno_crypto::init(None),
        deno_fetch::deno_fetch::init(deno_fetch::Options {
            user_agent: concat!("isola/", env!("CARGO_PKG_VERSION")).to_string(),
            ..Default::default()
        }),
        isola_runtime::init(permissions),
    ]
}
