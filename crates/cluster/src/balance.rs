//! One round of the assigner (after Slicer's weighted moves,
//! ../shared/SLICER.md §2 and §6): from the last assignment of the
//! [`SLICES`] slices to workers, the workers alive and each slice's load,
//! the next assignment.
//!
//! 1. Slices lose the workers that left; a slice left with none goes to the
//!    least loaded worker (outside the churn budget).
//! 2. A slice hotter than a worker's fair share gets more replicas (up to
//!    [`MAX_REPLICAS`]); one that cooled down gives them back.
//! 3. Slices move from the hottest worker to the coldest while that lowers
//!    the hottest's load by enough to be worth a cold start; then idle
//!    slices move from the worker with the most to the one with the
//!    fewest, so new functions spread too. At most [`MOVE_BUDGET`] slices
//!    per round.
//!
//! Everything else stays where it was: functions stay warm where they ran.

use serde::{Deserialize, Serialize};

/// Slices of the function key space (a function's slice is the top byte
/// of its hash).
pub const SLICES: usize = 256;

/// Most workers one slice runs on.
pub const MAX_REPLICAS: usize = 3;

/// Most slices moved (or given a replica) in one round: 9% of the key
/// space, as Slicer.
pub const MOVE_BUDGET: usize = SLICES * 9 / 100;

/// How far above the mean the hottest worker may be before slices move:
/// smaller differences are noise, not worth a cold start.
const TOLERANCE: f64 = 1.05;

/// Invocations per second below which a slice keeps one worker, however
/// it compares with the rest: one worker runs that many without strain, and
/// each replica costs cold starts.
const REPLICATE_ABOVE: f64 = 100.0;

/// Invocations per second below which a replicated slice goes back to one
/// worker (between the two, it keeps what it has: no flapping).
const UNREPLICATE_BELOW: f64 = 50.0;

/// Smallest share of the gap between the hottest and the coldest worker a
/// move must close: moving idle slices off a worker made hot by one slice
/// would only cost cold starts.
const MIN_MOVE: f64 = 0.1;

/// Load a slice counts for when workers are picked for slices left
/// without one (invocations per second), so those spread evenly too.
const IDLE_LOAD: f64 = 0.01;

/// Invocations per second under which a slice is idle: moving it costs
/// (almost) no cold start.
const IDLE_RATE: f64 = 0.5;

/// The slice of `function`.
pub fn slice_of(function: &str) -> usize {
    (crate::placement::score([function, ""]) >> 56) as usize
}

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundStats {
    /// Slices moved or given a replica within the budget.
    pub moves: usize,
    /// Slices taken from workers that left.
    pub reassigned: usize,
    /// Load of the most loaded worker over the mean, after the round.
    pub imbalance: f64,
}

/// The next assignment: `slices[i]` lists the workers of slice `i`.
pub fn rebalance(
    previous: &[Vec<String>],
    workers: &[String],
    load: &[f64],
) -> (Vec<Vec<String>>, RoundStats) {
    let mut slices: Vec<Vec<String>> = (0..SLICES)
        .map(|i| {
            let mut kept = previous.get(i).cloned().unwrap_or_default();
            kept.retain(|w| workers.contains(w));
            kept.dedup();
            kept
        })
        .collect();
    let mut stats = RoundStats::default();
    if workers.is_empty() {
        return (slices, stats);
    }
    let weight = |i: usize| load.get(i).copied().unwrap_or(0.0).max(0.0) + IDLE_LOAD;
    for i in 0..SLICES {
        if slices[i].is_empty() {
            let loads = loads(&slices, workers, &weight);
            slices[i].push(coldest(&loads, &[]).to_string());
            stats.reassigned += (!previous.get(i).is_none_or(Vec::is_empty)) as usize;
        }
    }
    let busy = |i: usize| load.get(i).copied().unwrap_or(0.0).max(0.0);
    let idle = |i: usize| f64::from(u8::from(busy(i) < IDLE_RATE));
    stats.moves += replicate(&mut slices, workers, &busy);
    while stats.moves < MOVE_BUDGET && move_one(&mut slices, workers, &busy, MIN_MOVE) {
        stats.moves += 1;
    }
    while stats.moves < MOVE_BUDGET && move_one(&mut slices, workers, &idle, 0.0) {
        stats.moves += 1;
    }
    let by = |weight: &dyn Fn(usize) -> f64| {
        let loads = loads(&slices, workers, &weight);
        let mean = loads.iter().map(|(_, l)| l).sum::<f64>() / loads.len() as f64;
        let max = loads.iter().map(|(_, l)| *l).fold(0.0, f64::max);
        (mean > 0.0).then(|| max / mean)
    };
    stats.imbalance = by(&busy).or_else(|| by(&idle)).unwrap_or(1.0);
    (slices, stats)
}

/// Each worker's load: its share of the slices it holds.
fn loads<'a>(
    slices: &[Vec<String>],
    workers: &'a [String],
    weight: &impl Fn(usize) -> f64,
) -> Vec<(&'a str, f64)> {
    let mut loads: Vec<(&str, f64)> = workers.iter().map(|w| (w.as_str(), 0.0)).collect();
    for (i, holders) in slices.iter().enumerate() {
        let share = weight(i) / holders.len().max(1) as f64;
        for holder in holders {
            if let Some(entry) = loads.iter_mut().find(|(w, _)| *w == holder) {
                entry.1 += share;
            }
        }
    }
    loads
}

/// The least loaded worker not in `except` (the first on a tie).
fn coldest<'a>(loads: &[(&'a str, f64)], except: &[String]) -> &'a str {
    loads
        .iter()
        .filter(|(w, _)| !except.iter().any(|e| e == w))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(loads[0].0, |(w, _)| w)
}

/// Gives hot slices replicas and takes them from cooled ones; returns how
/// many replicas it added or took (within the budget).
fn replicate(
    slices: &mut [Vec<String>],
    workers: &[String],
    weight: &impl Fn(usize) -> f64,
) -> usize {
    let total: f64 = (0..SLICES).map(weight).sum();
    let fair = total / workers.len() as f64;
    let most = MAX_REPLICAS.min(workers.len());
    let mut changed = 0;
    for i in 0..SLICES {
        // As many workers as it takes to keep each one's share of this
        // slice under a fair share of the whole.
        let wanted = if weight(i) >= REPLICATE_ABOVE {
            (weight(i) / fair).ceil() as usize
        } else if weight(i) < UNREPLICATE_BELOW {
            1
        } else {
            slices[i].len()
        }
        .clamp(1, most);
        while slices[i].len() > wanted && changed < MOVE_BUDGET {
            let loads = loads(slices, workers, weight);
            let hottest = slices[i]
                .iter()
                .max_by(|a, b| load_of(&loads, a).total_cmp(&load_of(&loads, b)))
                .cloned();
            slices[i].retain(|w| Some(w) != hottest.as_ref());
            changed += 1;
        }
        while slices[i].len() < wanted && changed < MOVE_BUDGET {
            let loads = loads(slices, workers, weight);
            let target = coldest(&loads, &slices[i]).to_string();
            slices[i].push(target);
            changed += 1;
        }
    }
    changed
}

fn load_of(loads: &[(&str, f64)], worker: &str) -> f64 {
    loads
        .iter()
        .find(|(w, _)| *w == worker)
        .map_or(0.0, |(_, l)| *l)
}

/// Moves one slice from the hottest worker to the coldest (by `weight`)
/// if that lowers the hottest's load, by at least `min_move` of the gap
/// between them; whether it moved one.
fn move_one(
    slices: &mut [Vec<String>],
    workers: &[String],
    weight: &impl Fn(usize) -> f64,
    min_move: f64,
) -> bool {
    let loads = loads(slices, workers, weight);
    let (Some(hot), Some(cold)) = (
        loads.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
        loads.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
    ) else {
        return false;
    };
    let mean = loads.iter().map(|(_, l)| l).sum::<f64>() / loads.len() as f64;
    if hot.1 <= mean * TOLERANCE || hot.1 - mean < 1.0 {
        return false;
    }
    let gap = hot.1 - cold.1;
    // The share that best halves the gap, among those that narrow it.
    let best = (0..SLICES)
        .filter(|&i| slices[i].iter().any(|w| w == hot.0) && !slices[i].iter().any(|w| w == cold.0))
        .map(|i| (i, weight(i) / slices[i].len() as f64))
        // Strictly narrower (not the same gap the other way round), and
        // by enough to be worth a cold start.
        .filter(|(_, share)| {
            *share > 0.0 && *share < gap * (1.0 - 1e-9) && *share >= gap * min_move
        })
        .min_by(|a, b| (a.1 - gap / 2.0).abs().total_cmp(&(b.1 - gap / 2.0).abs()));
    let Some((i, _)) = best else {
        return false;
    };
    for holder in slices[i].iter_mut() {
        if holder == hot.0 {
            *holder = cold.0.to_string();
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    fn count(slices: &[Vec<String>], worker: &str) -> usize {
        slices
            .iter()
            .filter(|s| s.iter().any(|w| w == worker))
            .count()
    }

    /// Rounds until nothing moves (at most 50).
    fn settle(mut slices: Vec<Vec<String>>, workers: &[String], load: &[f64]) -> Vec<Vec<String>> {
        for _ in 0..50 {
            let (next, stats) = rebalance(&slices, workers, load);
            slices = next;
            if stats.moves == 0 {
                break;
            }
        }
        slices
    }

    #[test]
    fn an_idle_cluster_spreads_its_slices_evenly_and_keeps_them() {
        let three = workers(3);
        let idle = vec![0.0; SLICES];
        let slices = settle(Vec::new(), &three, &idle);
        for w in &three {
            assert!(
                (84..=87).contains(&count(&slices, w)),
                "{w}: {}",
                count(&slices, w)
            );
        }
        let (again, stats) = rebalance(&slices, &three, &idle);
        assert_eq!((again, stats.moves, stats.reassigned), (slices, 0, 0));
    }

    #[test]
    fn a_new_worker_takes_its_share_within_the_budget_per_round() {
        let three = workers(3);
        let idle = vec![0.0; SLICES];
        let before = settle(Vec::new(), &three, &idle);
        let four = workers(4);
        let (after, stats) = rebalance(&before, &four, &idle);
        assert!(stats.moves <= MOVE_BUDGET, "{stats:?}");
        let moved = (0..SLICES).filter(|&i| before[i] != after[i]).count();
        assert_eq!(moved, stats.moves);
        // Until no worker is over the mean (64) by more than the
        // tolerance.
        let settled = settle(after, &four, &idle);
        assert!(
            (55..=66).contains(&count(&settled, "w3")),
            "{}",
            count(&settled, "w3")
        );
        assert!(four.iter().all(|w| count(&settled, w) <= 67));
    }

    #[test]
    fn a_dead_workers_slices_go_to_the_others_at_once() {
        let three = workers(3);
        let idle = vec![0.0; SLICES];
        let before = settle(Vec::new(), &three, &idle);
        let two = workers(2);
        let (after, stats) = rebalance(&before, &two, &idle);
        assert_eq!(stats.reassigned, count(&before, "w2"));
        assert!(after
            .iter()
            .all(|s| !s.is_empty() && !s.iter().any(|w| w == "w2")));
        // What the survivors held stays with them.
        for i in 0..SLICES {
            if !before[i].iter().any(|w| w == "w2") {
                assert_eq!(before[i], after[i]);
            }
        }
    }

    #[test]
    fn one_busy_slice_moves_nothing_else_and_stays_on_one_worker() {
        let three = workers(3);
        let before = settle(Vec::new(), &three, &[0.0; SLICES]);
        let mut load = vec![0.0; SLICES];
        load[7] = 40.0;
        let (after, stats) = rebalance(&before, &three, &load);
        assert_eq!((after, stats.moves), (before, 0));
    }

    #[test]
    fn load_is_balanced_and_a_hot_slice_gets_replicas() {
        let three = workers(3);
        let mut load = vec![0.0; SLICES];
        // Ten busy slices, all on w0 to begin with; one of them hotter
        // than a worker's fair share.
        let mut slices = vec![vec!["w1".to_string()]; SLICES];
        for (i, rate) in [(0, 900.0), (1, 100.0), (2, 100.0), (3, 100.0), (4, 100.0)] {
            load[i] = rate;
            slices[i] = vec!["w0".into()];
        }
        let settled = settle(slices, &three, &load);
        assert!(settled[0].len() >= 2, "{:?}", settled[0]);
        let (_, stats) = rebalance(&settled, &three, &load);
        assert!(stats.imbalance < 1.3, "{stats:?}");
        // Somewhat cooler, it keeps them (no flapping); cooled down, it
        // gives them back.
        let mut cooler = load.clone();
        cooler[0] = 70.0;
        let (after, _) = rebalance(&settled, &three, &cooler);
        assert_eq!(after[0].len(), settled[0].len());
        let cool = vec![0.0; SLICES];
        let (after, _) = rebalance(&settled, &three, &cool);
        assert_eq!(after[0].len(), 1);
    }
}
