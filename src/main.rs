//! The `isola` binary: initialises V8 before any thread exists, then hands
//! over to the command line in `isola-cli`. A Wasm compiler child (`isola
//! __wasm-compile`, started by `isola serve` under address-space limits)
//! runs no JavaScript, so it starts without V8 and its reservations.
//!
//! Memory comes from mimalloc: a request's buffers are allocated on the
//! worker thread that serves it and its record freed on the thread that
//! writes records, which glibc's arenas make slow (a fifth of a hello
//! request's user time went to malloc, free and their consolidation).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "__wasm-compile")
    {
        let code = isola_runtime_wasm::compile::child_main();
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    isola_runtime_js::init_platform();
    isola_cli::run()
}
