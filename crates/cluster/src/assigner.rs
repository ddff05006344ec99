//! The assigner: which workers run which slice of the functions
//! (../shared/SLICER.md §6).
//!
//! - **One at a time.** Every node runs a candidate; the one holding the
//!   lease (key `leader` of KV bucket `isola_assigner`, whose entries
//!   expire after [`LEASE`]) assigns, renewing it each round by
//!   compare-and-set; the others try to take it every half lease. A lost
//!   renewal steps down at once.
//! - **Each round** ([`ROUND`]) it reads the workers alive and each
//!   slice's load from their heartbeats (invocations per second, each
//!   heartbeat counted once, smoothed over about 10 s),
//!   computes the next assignment (`balance::rebalance`) from the last, and
//!   publishes it when it changed, as `{generation, slices}` in key
//!   `current` of bucket `isola_assignment`, by compare-and-set on the
//!   revision it read: a deposed assigner's write fails.
//! - **Gateways** watch that key ([`Assignments`]) and send a function's
//!   invocations to the live workers of its slice; with none (no
//!   assignment yet, or all of them dead), to the rendezvous-hashed ones.

use crate::balance::{rebalance, slice_of, RoundStats, SLICES};
use crate::buckets::{key_value, key_value_with};
use crate::members::Members;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long the assigner's lease lasts unrenewed.
pub const LEASE: Duration = Duration::from_secs(6);

/// How often the assigner computes the assignment.
pub const ROUND: Duration = Duration::from_secs(1);

const LEASE_BUCKET: &str = "isola_assigner";
const ASSIGNMENT_BUCKET: &str = "isola_assignment";
const CURRENT: &str = "current";

/// Which workers run which slice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Counts the assignments published.
    pub generation: u64,
    /// The node that computed it.
    pub assigner: String,
    /// The workers of each slice.
    pub slices: Vec<Vec<String>>,
    /// What its round did.
    pub stats: RoundStats,
}

/// Invocations a worker ran per slice since its last heartbeat.
pub struct SliceLoad(Vec<AtomicU32>);

impl Default for SliceLoad {
    fn default() -> Self {
        Self((0..SLICES).map(|_| AtomicU32::new(0)).collect())
    }
}

impl SliceLoad {
    /// Counts an invocation of `function`.
    pub fn count(&self, function: &str) {
        self.0[slice_of(function)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, of the slices that had any.
    pub fn take(&self) -> Vec<(u16, u32)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, count)| match count.swap(0, Ordering::Relaxed) {
                0 => None,
                n => Some((i as u16, n)),
            })
            .collect()
    }
}

/// The assignment as last published, followed from the cluster.
#[derive(Clone, Default)]
pub struct Assignments(Arc<RwLock<Option<Arc<Assignment>>>>);

impl Assignments {
    /// Follows the published assignment through `client`, for as long as
    /// the process runs.
    pub async fn follow(client: &async_nats::Client) -> Result<Self, isola_store::StoreError> {
        let js = jetstream::new(client.clone());
        let store = key_value(&js, ASSIGNMENT_BUCKET).await?;
        let assignments = Self::default();
        let current = Arc::downgrade(&assignments.0);
        tokio::spawn(async move {
            loop {
                if let Ok(mut watch) = store.watch_with_history(CURRENT).await {
                    while let Some(Ok(entry)) = watch.next().await {
                        let Some(current) = current.upgrade() else {
                            return;
                        };
                        let read = serde_json::from_slice::<Assignment>(&entry.value).ok();
                        *current.write().unwrap() = read.map(Arc::new);
                    }
                }
                tracing::warn!("the watch of the assignment ended: watching again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(assignments)
    }

    /// The last assignment heard of.
    pub fn current(&self) -> Option<Arc<Assignment>> {
        self.0.read().unwrap().clone()
    }

    /// The workers `function`'s slice is assigned to, of `alive`.
    pub fn workers_of(&self, function: &str, alive: &[String]) -> Vec<String> {
        let Some(current) = self.current() else {
            return Vec::new();
        };
        current
            .slices
            .get(slice_of(function))
            .map(|workers| {
                workers
                    .iter()
                    .filter(|w| alive.contains(w))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs this node's assigner candidate (as node `id`) until `stop` turns
/// true.
pub fn run_assigner(
    client: async_nats::Client,
    id: String,
    members: Members,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let work = async {
            loop {
                if let Err(error) = candidate(&client, &id, &members).await {
                    tracing::warn!(%error, "the assigner stopped: trying again");
                }
                tokio::time::sleep(LEASE / 2).await;
            }
        };
        tokio::select! {
            () = work => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    })
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Tries for the lease every half lease; assigns while it holds it.
async fn candidate(
    client: &async_nats::Client,
    id: &str,
    members: &Members,
) -> Result<(), Failure> {
    let js = jetstream::new(client.clone());
    let lease = key_value_with(&js, LEASE_BUCKET, |config| config.max_age = LEASE).await?;
    let assignment = key_value(&js, ASSIGNMENT_BUCKET).await?;
    // Every node alive is heard from before this one may assign: an
    // assigner that knew only some workers would pile every slice on them.
    tokio::time::sleep(crate::members::DEAD_AFTER).await;
    loop {
        if let Ok(revision) = lease.create("leader", id.to_string().into()).await {
            tracing::info!(id, "this node is the cluster's assigner");
            let stepped_down = lead(&lease, revision, &assignment, id, members).await;
            tracing::info!(id, reason = %stepped_down, "this node stopped assigning");
        }
        tokio::time::sleep(LEASE / 2).await;
    }
}

/// Assigns each round while the lease is renewed; returns why it stopped.
async fn lead(
    lease: &kv::Store,
    mut revision: u64,
    assignment: &kv::Store,
    id: &str,
    members: &Members,
) -> Failure {
    let mut load = Load::default();
    let mut every = tokio::time::interval(ROUND);
    // Its first assignment is written whatever it is: a deposed
    // assigner's late write is overwritten at once.
    let mut first = true;
    loop {
        every.tick().await;
        revision = match lease
            .update("leader", id.to_string().into(), revision)
            .await
        {
            Ok(revision) => revision,
            Err(error) => return error.into(),
        };
        load.add(members);
        match round(assignment, id, members, &load.rates, first).await {
            Ok(()) => first = false,
            // Still the assigner while the lease holds: next round.
            Err(error) => tracing::warn!(%error, "an assigner's round failed"),
        }
    }
}

/// Invocations per second per slice, smoothed over about 10 s.
#[derive(Default)]
struct Load {
    rates: Vec<f64>,
    /// When each node's last heartbeat counted came.
    counted: std::collections::HashMap<String, std::time::Instant>,
}

/// Weight of a round's counts in the smoothed rates.
const SMOOTHING: f64 = 0.1;

impl Load {
    /// Folds in the heartbeats heard since the last round, each once.
    fn add(&mut self, members: &Members) {
        let mut now = vec![0.0; SLICES];
        let heard = members.heard();
        for (node, at) in &heard {
            if self
                .counted
                .get(&node.id)
                .is_some_and(|counted| counted >= at)
            {
                continue;
            }
            self.counted.insert(node.id.clone(), *at);
            for &(slice, count) in &node.load {
                if let Some(rate) = now.get_mut(slice as usize) {
                    *rate += f64::from(count) / ROUND.as_secs_f64();
                }
            }
        }
        self.counted
            .retain(|id, _| heard.iter().any(|(node, _)| &node.id == id));
        if self.rates.is_empty() {
            // A new assigner starts from what it sees, not from nothing.
            self.rates = now;
            return;
        }
        for (smoothed, now) in self.rates.iter_mut().zip(now) {
            *smoothed += SMOOTHING * (now - *smoothed);
        }
    }
}

/// One round: the next assignment, published if it changed (or if
/// `force`d). With no workers alive it publishes nothing: the last
/// assignment is kept for when they come back.
async fn round(
    assignment: &kv::Store,
    id: &str,
    members: &Members,
    load: &[f64],
    force: bool,
) -> Result<(), Failure> {
    let mut workers = members.workers();
    if workers.is_empty() {
        return Ok(());
    }
    workers.sort();
    let (previous, revision) = match assignment.entry(CURRENT).await? {
        Some(entry) => (
            serde_json::from_slice::<Assignment>(&entry.value).unwrap_or_default(),
            Some(entry.revision),
        ),
        None => (Assignment::default(), None),
    };
    let (slices, stats) = rebalance(&previous.slices, &workers, load);
    if slices == previous.slices && !force {
        return Ok(());
    }
    let next = Assignment {
        generation: previous.generation + 1,
        assigner: id.to_string(),
        slices,
        stats,
    };
    let bytes = serde_json::to_vec(&next)?;
    match revision {
        Some(revision) => assignment.update(CURRENT, bytes.into(), revision).await?,
        None => assignment.create(CURRENT, bytes.into()).await?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_load_counts_by_slice_and_starts_again() {
        let load = SliceLoad::default();
        load.count("a");
        load.count("a");
        load.count("b");
        let mut taken = load.take();
        taken.sort();
        let (a, b) = (slice_of("a") as u16, slice_of("b") as u16);
        let mut expected = if a == b {
            vec![(a, 3)]
        } else {
            vec![(a, 2), (b, 1)]
        };
        expected.sort();
        assert_eq!(taken, expected);
        assert!(load.take().is_empty());
    }
}
