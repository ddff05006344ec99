//! Who gets to run, and how much of the node a function may hold.
//!
//! A run enters through three checks, and holds what it took until it
//! ends (its streamed body included):
//! - **memory**: its `memory_mb`, plus what the host holds for it (output
//!   pipes, bodies in flight), from the node's admission budget, shared
//!   with JavaScript (`isola_core::admission`); refused when it does not fit;
//! - **share**: at most a quarter of the node's runs belong to one
//!   function, so runs that only wait (a body nobody reads, a slow
//!   upstream) cannot take every slot; refused past it;
//! - **slot**: one of the runs the pooling allocator has room for, waited
//!   for at most the function's wall-clock limit.

use isola_core::admission::{Admission, Admitted};
use isola_core::{ErrorCode, FunctionError, FunctionSource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the host may hold for one run besides its linear memory, in MiB:
/// stdout (16) and stderr (1) pipes, response chunks in flight (1), and
/// its resources' headers and bodies (256 at most: 8 + 8).
const HOST_MB: usize = 34;

/// The checks, for one runtime.
pub struct Gate {
    admission: Arc<Admission>,
    slots: Arc<Semaphore>,
    /// Runs one function may hold at once.
    share: usize,
    /// Runs under way, by function name.
    held: Mutex<HashMap<String, usize>>,
}

/// What a run holds while it runs.
pub struct Entry {
    _admitted: Admitted,
    _slot: OwnedSemaphorePermit,
    _share: Share,
}

/// One run of a function, counted against its share.
struct Share {
    gate: Arc<Gate>,
    name: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.gate.held.lock().unwrap();
        if let Some(count) = held.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.name);
            }
        }
    }
}

impl Gate {
    /// A gate for `slots` runs at once, admitting memory from `admission`.
    pub fn new(slots: usize, admission: Arc<Admission>) -> Arc<Self> {
        Arc::new(Self {
            admission,
            slots: Arc::new(Semaphore::new(slots)),
            share: (slots / 4).max(1),
            held: Mutex::default(),
        })
    }

    /// Lets a run of `function` in, or says why not.
    pub async fn enter(
        self: &Arc<Self>,
        function: &FunctionSource,
    ) -> Result<Entry, FunctionError> {
        let admitted = self
            .admission
            .admit(function.limits.memory_mb as usize + HOST_MB)
            .ok_or_else(|| {
                FunctionError::new(
                    ErrorCode::Unavailable,
                    "the node is at capacity: the memory of the invocations under way is fully promised; retry shortly",
                )
            })?;
        let share = self.share(&function.name)?;
        let slot = wait_for(
            function.limits.timeout(),
            self.slots.clone().acquire_owned(),
            "every WebAssembly slot stayed busy for the function's whole wall-clock limit: retry shortly",
        )
        .await?;
        Ok(Entry {
            _admitted: admitted,
            _slot: slot,
            _share: share,
        })
    }

    fn share(self: &Arc<Self>, name: &str) -> Result<Share, FunctionError> {
        let mut held = self.held.lock().unwrap();
        let count = held.entry(name.to_string()).or_default();
        if *count >= self.share {
            return Err(FunctionError::new(
                ErrorCode::Unavailable,
                format!(
                    "this function has {} runs under way, its share of the node: retry shortly",
                    self.share
                ),
            ));
        }
        *count += 1;
        Ok(Share {
            gate: self.clone(),
            name: name.to_string(),
        })
    }
}

/// A permit of a semaphore, waited for at most `timeout`; `busy` says why
/// there was none by then.
pub async fn wait_for<P>(
    timeout: std::time::Duration,
    acquire: impl std::future::Future<Output = Result<P, tokio::sync::AcquireError>>,
    busy: &str,
) -> Result<P, FunctionError> {
    match tokio::time::timeout(timeout, acquire).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(FunctionError::new(
            ErrorCode::Unavailable,
            "the WebAssembly runtime is shutting down",
        )),
        Err(_) => Err(FunctionError::new(ErrorCode::Unavailable, busy)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_function_gets_a_quarter_of_the_runs_and_memory_is_reserved() {
        let admission = Arc::new(Admission::new(10_000));
        let gate = Gate::new(8, admission.clone());
        let mut greedy = isola_core::FunctionSource::single_module("g", "greedy", "");
        greedy.limits.memory_mb = 100;
        let other = isola_core::FunctionSource::single_module("o", "other", "");
        let first = gate.enter(&greedy).await.unwrap();
        let second = gate.enter(&greedy).await.unwrap();
        let refused = gate.enter(&greedy).await.err().unwrap();
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert!(refused.message.contains("share"), "{refused:?}");
        // Others still get in; and the greedy one again once a run ends.
        let _other = gate.enter(&other).await.unwrap();
        drop(first);
        let _third = gate.enter(&greedy).await.unwrap();
        drop(second);
        // Memory: 134 and 162 MiB (memory_mb and 34 for the host) fit in
        // 300, another 134 does not.
        let small = Gate::new(1000, Arc::new(Admission::new(300)));
        let _a = small.enter(&greedy).await.unwrap();
        let _b = small.enter(&other).await.unwrap();
        let full = small.enter(&greedy).await.err().unwrap();
        assert!(full.message.contains("capacity"), "{full:?}");
    }
}
