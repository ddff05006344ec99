//! Tests of the real `isola` binary, driven as a user would drive it.

mod bodies;
mod cluster;
mod data_dir;
mod dev;
mod first_start;
mod invoke;
mod logs;
mod metrics;
mod owner;
mod public_errors;
mod secrets;
mod serve_journey;
mod server;
mod traffic;
mod unknown_functions;
mod wasm;
mod websocket;

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `isola` with `args`, feeding `stdin`.
pub fn isola(args: &[&str], stdin: &str) -> Output {
    isola_with_env(args, stdin, &[])
}

/// Runs `isola` with `args` and extra environment variables, feeding `stdin`.
pub fn isola_with_env(args: &[&str], stdin: &str, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_isola"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting isola");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("waiting for isola")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Relays the rest of a child's output, line by line, to the receiver (so
/// that the child never blocks on a full pipe).
pub fn relay_lines(
    lines: impl Iterator<Item = std::io::Result<String>> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tell, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tell.send(line);
        }
    });
    said
}

/// A WASI command copying stdin to stdout.
pub const WASI_ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.load (i32.const 8))) (then (return)))
      (i32.store (i32.const 16) (i32.const 1024))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $again))))"#;
