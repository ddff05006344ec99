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

/// Invocations of one function a gateway must have outstanding for that
/// function to spill: a function called now and then waits its turn on its
/// worker rather than start cold on another.
pub const SPILL_CONCURRENCY: u32 = 4;

/// Outstanding invocations under which a worker is never over its share.
pub const SPILL_MIN: u32 = 4;

/// How far over the mean a worker's outstanding invocations may go before
/// its functions spill (HAProxy's `hash-balance-factor` 150).
pub const SPILL_FACTOR: f64 = 1.5;

/// Invocations this gateway has outstanding, per worker.
#[derive(Clone, Default)]
pub struct Outstanding(Arc<Mutex<HashMap<String, u32>>>);

impl Outstanding {
    /// Whether the least loaded of `assigned` has more outstanding than
    /// its share allows: more than [`SPILL_MIN`], and more than
    /// [`SPILL_FACTOR`] times the mean over `workers`. Then its function
    /// spills onto more workers (consistent hashing with bounded loads,
    /// ../shared/SLICER.md §5): a worker slower than the rest, or holding
    /// more of the traffic than the assigner has seen yet, is not left to
    /// queue.
    pub fn over_share(&self, assigned: &[String], workers: &[String]) -> bool {
        let counts = self.0.lock().unwrap();
        let of = |w: &String| counts.get(w.as_str()).copied().unwrap_or(0);
        let least = assigned.iter().map(of).min().unwrap_or(0);
        let mean = workers.iter().map(of).sum::<u32>() as f64 / workers.len().max(1) as f64;
        least > SPILL_MIN && f64::from(least) > SPILL_FACTOR * mean
    }

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

/// Invocations this gateway has outstanding, per function.
#[derive(Clone, Default)]
pub struct Concurrency(Arc<Mutex<HashMap<String, u32>>>);

impl Concurrency {
    /// Counts one more invocation of `function` until the guard is
    /// dropped; returns it with how many there are now (this one included).
    pub fn enter(&self, function: &str) -> (ConcurrencyGuard, u32) {
        let mut counts = self.0.lock().unwrap();
        let count = counts.entry(function.to_string()).or_default();
        *count += 1;
        let now = *count;
        let guard = ConcurrencyGuard {
            concurrency: self.clone(),
            function: function.to_string(),
        };
        (guard, now)
    }
}

/// One invocation of a function outstanding.
pub struct ConcurrencyGuard {
    concurrency: Concurrency,
    function: String,
}

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        let mut counts = self.concurrency.0.lock().unwrap();
        if let Some(count) = counts.get_mut(&self.function) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.function);
            }
        }
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
    fn a_worker_far_over_the_mean_is_over_its_share() {
        let outstanding = Outstanding::default();
        let pool = workers(3);
        let first = [pool[0].clone()];
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(outstanding.pick(&[&pool[0]]).unwrap());
        }
        // 5 against a mean of 5/3: over.
        assert!(outstanding.over_share(&first, &pool));
        for _ in 0..4 {
            held.push(outstanding.pick(&[&pool[1]]).unwrap());
            held.push(outstanding.pick(&[&pool[2]]).unwrap());
        }
        // 5 against a mean of 13/3: within.
        assert!(!outstanding.over_share(&first, &pool));
        held.truncate(2);
        // 2: under the floor.
        assert!(!outstanding.over_share(&first, &pool));
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
