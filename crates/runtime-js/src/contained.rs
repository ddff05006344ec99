//! Running a parser where its crash cannot take the node down.
//!
//! Some native code that handles untrusted input recurses without a stack
//! check (swc, for TypeScript): an overflow there aborts the whole process.
//! [`in_child`] runs such work in a forked child process and returns what it
//! wrote, or [`ChildFailed`] if it crashed, overran its time or wrote
//! nothing. The child is a copy of the calling thread only; it must touch no
//! lock another thread may have held at the fork, so callers serialise the
//! work they fork (see `typescript.rs`) and the child ends with `_exit`.

use std::time::{Duration, Instant};

/// Why the child gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ChildFailed {
    /// The child crashed (a signal such as SIGSEGV or SIGABRT) or exited
    /// without an answer.
    #[error("the work crashed")]
    Crashed,
    /// The child ran past its time and was killed.
    #[error("the work took longer than {0:?}")]
    TimedOut(Duration),
    /// Forking or reading the answer failed.
    #[error("{0}")]
    System(String),
}

/// Runs `work` in a forked child and returns the bytes it produced.
pub fn in_child(limit: Duration, work: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, ChildFailed> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ChildFailed::System(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: the child only runs `work` on this thread's copy and exits
    // with `_exit`, never returning into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        close(read_fd);
        close(write_fd);
        return Err(ChildFailed::System(error.to_string()));
    }
    if pid == 0 {
        close(read_fd);
        silence_stderr();
        let answer = work();
        let ok = write_all(write_fd, &answer);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    close(write_fd);
    let answer = read_until_eof(read_fd, Instant::now() + limit);
    close(read_fd);
    let exited_cleanly = reap(pid, answer.is_err());
    match answer {
        Ok(bytes) if exited_cleanly => Ok(bytes),
        Ok(_) => Err(ChildFailed::Crashed),
        Err(error) => Err(error),
    }
}

/// Sends the child's stderr (Rust's "stack overflow" notice) to /dev/null.
fn silence_stderr() {
    // SAFETY: a constant, NUL-terminated path; dup2 onto fd 2.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if null >= 0 {
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}

fn close(fd: libc::c_int) {
    // SAFETY: closing a descriptor this module opened.
    unsafe { libc::close(fd) };
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Reads the pipe to its end, waiting at most until `deadline`.
fn read_until_eof(fd: libc::c_int, deadline: Instant) -> Result<Vec<u8>, ChildFailed> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ChildFailed::TimedOut(Duration::ZERO));
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout.max(1)) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ChildFailed::System(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        if ready == 0 {
            continue;
        }
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        match n {
            0 => return Ok(out),
            n if n > 0 => out.extend_from_slice(&buffer[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => {
                return Err(ChildFailed::System(
                    std::io::Error::last_os_error().to_string(),
                ))
            }
        }
    }
}

/// Waits for the child (killing it first if `kill`); whether it exited 0.
fn reap(pid: libc::pid_t, kill: bool) -> bool {
    if kill {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_answers() {
        let answer = in_child(Duration::from_secs(10), || b"hello".to_vec()).unwrap();
        assert_eq!(answer, b"hello");
    }

    #[test]
    fn a_crash_in_the_child_is_an_error_not_a_crash() {
        let failed = in_child(Duration::from_secs(10), || std::process::abort()).unwrap_err();
        assert!(matches!(failed, ChildFailed::Crashed), "{failed:?}");
    }

    #[test]
    fn a_child_past_its_time_is_killed() {
        let started = Instant::now();
        let failed = in_child(Duration::from_millis(200), || loop {
            std::hint::spin_loop()
        })
        .unwrap_err();
        assert!(matches!(failed, ChildFailed::TimedOut(_)), "{failed:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
