//! Where a gateway sends a function's invocations: to the function's
//! *slice*, the [`REPLICAS`] workers that rank it highest by rendezvous
//! hashing (each worker's score for a function is a hash of both names),
//! and of those to the one with fewer invocations outstanding from this
//! gateway. A function thus runs warm on at most two workers instead of
//! cold-starting on every one; when a worker joins or leaves, only the
//! functions it ranks first or second move (the baseline of
//! ../shared/SLICER.md §5, without an assigner yet).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Workers a function's invocations are spread over.
pub const REPLICAS: usize = 2;

/// A 64-bit FNV-1a hash of `parts` (with a separator), then mixed
/// (splitmix64's finaliser): stable across processes and versions.
pub(crate) fn score(parts: [&str; 2]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The workers of `function`'s slice among `workers`, best first.
pub fn slice<'a>(function: &str, workers: &'a [String]) -> Vec<&'a String> {
    let mut ranked: Vec<(u64, &String)> = workers
        .iter()
        .map(|worker| (score([function, worker]), worker))
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked
        .into_iter()
        .take(REPLICAS)
        .map(|(_, worker)| worker)
        .collect()
}

/// Invocations this gateway has outstanding, per worker.
#[derive(Clone, Default)]
pub struct Outstanding(Arc<Mutex<HashMap<String, u32>>>);

impl Outstanding {
    /// Of `candidates`, the one with the fewest outstanding (the first on
    /// a tie), counted as having one more until the guard is dropped.
    pub fn pick(&self, candidates: &[&String]) -> Option<OutstandingGuard> {
        let mut counts = self.0.lock().unwrap();
        let chosen = candidates
            .iter()
            .min_by_key(|worker| counts.get(worker.as_str()).copied().unwrap_or(0))?;
        *counts.entry(chosen.to_string()).or_default() += 1;
        Some(OutstandingGuard {
            outstanding: self.clone(),
            worker: chosen.to_string(),
        })
    }
}

/// One invocation outstanding on a worker.
pub struct OutstandingGuard {
    outstanding: Outstanding,
    /// The worker it went to.
    pub worker: String,
}

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        let mut counts = self.outstanding.0.lock().unwrap();
        if let Some(count) = counts.get_mut(&self.worker) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.worker);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn a_slice_is_stable_and_moves_little_when_a_worker_joins() {
        let (three, four) = (workers(3), workers(4));
        let mut moved = 0;
        for f in 0..1000 {
            let name = format!("f{f}");
            let before = slice(&name, &three);
            assert_eq!(before, slice(&name, &three));
            assert_eq!(before.len(), REPLICAS);
            let after = slice(&name, &four);
            // A function keeps its workers unless the new one outranks them.
            for worker in &after {
                if !before.contains(worker) {
                    assert_eq!(worker.as_str(), "w3");
                    moved += 1;
                }
            }
        }
        // The new worker takes about its share: 2 of 4 places, half of them.
        assert!((350..650).contains(&moved), "{moved}");
    }

    #[test]
    fn the_least_busy_of_a_slice_is_picked() {
        let outstanding = Outstanding::default();
        let pool = workers(2);
        let candidates: Vec<&String> = pool.iter().collect();
        let first = outstanding.pick(&candidates).unwrap();
        let second = outstanding.pick(&candidates).unwrap();
        assert_ne!(first.worker, second.worker);
        drop(first);
        let third = outstanding.pick(&candidates).unwrap();
        assert_eq!(third.worker, "w0");
    }
}
