//! Integration tests of the JavaScript runtime: real isolates, real limits.
//!
//! One binary for every scenario (each V8-linked test binary is large). It
//! has its own `main` so that V8 is initialised before the test harness
//! creates threads. Test modules register their cases in [`TESTS`].

mod bypass;
mod harness;
mod hostile;
mod isolation;
mod kv;
mod modules;
mod native;
mod network;
mod shapes;
mod threads;

fn main() -> std::process::ExitCode {
    isola_runtime_js::init_platform();
    harness::run(&[
        shapes::TESTS,
        hostile::TESTS,
        bypass::TESTS,
        isolation::TESTS,
        kv::TESTS,
        modules::TESTS,
        network::TESTS,
        native::TESTS,
        threads::TESTS,
    ])
}
