//! Compiling untrusted Wasm in a child process, within limits.
//!
//! Cranelift's time and memory grow with what a module asks of it, and a
//! small module can ask for a lot (a 2 MB module took 53 s and 2.5 GB in a
//! review). A node that compiles in its own process lets one deploy take
//! its cores and memory. With [`CompilerProcess`], each module is compiled
//! by a child (the node's own binary, run with a hidden command that calls
//! [`child_main`]) under `RLIMIT_CPU` and `RLIMIT_AS`, at a low scheduling
//! priority, and killed past a wall-clock limit; the parent loads the
//! artifact it prints. The child's engine has the parent's settings, less
//! the pooling allocator (which reserves address space up front and has no
//! part in compiled code).

use isola_core::{ErrorCode, FunctionError, RuntimeKind};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Largest module or component the child reads, and largest artifact the
/// parent reads back.
const MAX_INPUT: u64 = 256 << 20;
const MAX_ARTIFACT: u64 = 1 << 30;

/// How the node starts a compiler child, and its limits.
#[derive(Debug, Clone)]
pub struct CompilerProcess {
    /// The program (the node's own binary).
    pub program: PathBuf,
    /// Its arguments (the hidden command that calls [`child_main`]).
    pub args: Vec<String>,
    /// CPU time one compilation may use, all threads together.
    pub cpu: Duration,
    /// Address space the child may map, in bytes.
    pub memory_bytes: u64,
}

impl CompilerProcess {
    /// Compiles `bytes` (a module or a component) in a child; the artifact.
    /// Blocks the calling thread.
    pub fn compile(&self, bytes: &[u8]) -> Result<Vec<u8>, FunctionError> {
        let mut child = self.command().spawn().map_err(|e| {
            FunctionError::new(
                ErrorCode::Internal,
                format!("starting the Wasm compiler: {e}"),
            )
        })?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = bytes.to_vec();
        let feeding = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut stdout = child.stdout.take().expect("piped");
        let reading = std::thread::spawn(move || {
            let mut artifact = Vec::new();
            let read = (&mut stdout).take(MAX_ARTIFACT).read_to_end(&mut artifact);
            read.map(|_| artifact)
        });
        let mut stderr = child.stderr.take().expect("piped");
        let status = self.wait(&mut child);
        let _ = feeding.join();
        let artifact = reading.join().ok().and_then(Result::ok);
        let mut message = String::new();
        let _ = (&mut stderr).take(4096).read_to_string(&mut message);
        match (status, artifact) {
            (Some(status), Some(artifact)) if status.success() => Ok(artifact),
            (Some(status), _) if status.code() == Some(INVALID) => Err(FunctionError::new(
                ErrorCode::InvalidFunction,
                message.trim().to_string(),
            )),
            (status, _) => Err(self.over_limits(status)),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (cpu, memory) = (self.cpu.as_secs().max(1), self.memory_bytes);
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (setrlimit and setpriority).
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                limit(libc::RLIMIT_CPU, cpu)?;
                limit(libc::RLIMIT_AS, memory)?;
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                Ok(())
            });
        }
        command
    }

    /// Waits for the child, for at most twice its CPU limit (it may sleep
    /// or be starved); kills it then. `None`: killed so.
    fn wait(&self, child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + self.cpu * 2 + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// The error for a child that did not finish within its limits.
    fn over_limits(&self, status: Option<std::process::ExitStatus>) -> FunctionError {
        use std::os::unix::process::ExitStatusExt;
        let cpu = status.and_then(|s| s.signal()) == Some(libc::SIGXCPU)
            || status.and_then(|s| s.signal()) == Some(libc::SIGKILL)
            || status.is_none();
        let message = if cpu {
            format!(
                "compiling this WebAssembly took more than the node's limit of {} s: make the module smaller or simpler",
                self.cpu.as_secs()
            )
        } else {
            format!(
                "compiling this WebAssembly failed within the node's limit of {} MiB of memory: make the module smaller or simpler",
                self.memory_bytes >> 20
            )
        };
        FunctionError::new(ErrorCode::InvalidFunction, message)
    }
}

fn limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: a valid rlimit for a valid resource.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child's exit code for a module that is not valid.
const INVALID: i32 = 65;

/// The compiler child: reads a module or component on stdin, writes its
/// compiled artifact to stdout; an invalid input exits with a message on
/// stderr. Returns the exit code.
pub fn child_main() -> i32 {
    let mut bytes = Vec::new();
    if std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return 1;
    }
    let engine = match crate::engine::compiling_engine() {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("{}", error.message);
            return 1;
        }
    };
    let compiled = match RuntimeKind::detect(&bytes) {
        RuntimeKind::WasmComponent => engine.precompile_component(&bytes),
        _ => engine.precompile_module(&bytes),
    };
    match compiled {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(error) => {
            let what = match RuntimeKind::detect(&bytes) {
                RuntimeKind::WasmComponent => "component",
                _ => "module",
            };
            eprintln!("invalid WebAssembly {what}: {error:#}");
            INVALID
        }
    }
}
