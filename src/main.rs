//! The `isola` binary: initialises V8 before any thread exists, then hands
//! over to the command line in `isola-cli`.

fn main() -> std::process::ExitCode {
    isola_runtime_js::init_platform();
    isola_cli::run()
}
