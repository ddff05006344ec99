//! Who is in the cluster: every node says so on `isola.nodes.<id>` each
//! second ([`Heartbeat`]), and [`Members`] keeps the nodes heard from
//! within [`DEAD_AFTER`]. A node that is stopping says so in its
//! heartbeats, which go on while it finishes its work: it gets no new
//! invocations, but those it runs are still waited for. One that dies is
//! forgotten after [`DEAD_AFTER`].

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A node not heard from for this long is taken for dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);

/// The subject a node's heartbeats go on.
fn subject(id: &str) -> String {
    format!("isola.nodes.{id}")
}

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its id (unique per process).
    pub id: String,
    /// Whether it runs invocations (a worker or `all`).
    pub runs_invocations: bool,
    /// Whether it answers HTTP (a gateway or `all`).
    pub serves_http: bool,
    /// Invocations it is running now.
    pub in_flight: u32,
    /// Whether it is stopping (its last heartbeat).
    #[serde(default)]
    pub leaving: bool,
    /// Invocations it ran since its last heartbeat, per slice of the
    /// functions (`balance::slice_of`), for the assigner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<(u16, u32)>,
}

/// What a node reports in each heartbeat: invocations running, and those
/// run per slice since the last one.
pub type Report = (u32, Vec<(u16, u32)>);

/// A new node id, random (the last token of a new inbox, a NUID): a
/// restarted node is a new member, and two nodes never share one.
pub fn new_node_id(client: &async_nats::Client) -> String {
    let inbox = client.new_inbox();
    let nuid = inbox.rsplit('.').next().unwrap_or_default();
    format!("n{}", nuid.to_ascii_lowercase())
}

/// Whether `id` can be a node id: it stands in subjects.
fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Says `heartbeat` (with what `report` says) every [`HEARTBEAT`], as
/// leaving once `stop` turns true, for as long as the process runs.
pub fn beat(
    client: async_nats::Client,
    mut heartbeat: Heartbeat,
    report: impl Fn() -> Report + Send + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let subject = subject(&heartbeat.id);
        loop {
            (heartbeat.in_flight, heartbeat.load) = report();
            heartbeat.leaving = *stop.borrow();
            if let Ok(bytes) = serde_json::to_vec(&heartbeat) {
                let _ = client.publish(subject.clone(), bytes.into()).await;
            }
            if heartbeat.leaving {
                let _ = client.flush().await;
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

/// The nodes heard from lately.
#[derive(Clone, Default)]
pub struct Members {
    seen: Arc<Mutex<HashMap<String, (Heartbeat, Instant)>>>,
}

impl Members {
    /// Follows every node's heartbeats through `client`.
    pub async fn follow(client: &async_nats::Client) -> Result<Self, async_nats::SubscribeError> {
        let mut beats = client.subscribe("isola.nodes.*").await?;
        let members = Self::default();
        let seen = Arc::downgrade(&members.seen);
        tokio::spawn(async move {
            while let Some(message) = beats.next().await {
                let Some(seen) = seen.upgrade() else {
                    return;
                };
                let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&message.payload) else {
                    continue;
                };
                // A node speaks for itself only: its id is its subject's;
                // and of at most every slice once.
                let from = message.subject.strip_prefix("isola.nodes.");
                if from != Some(heartbeat.id.as_str())
                    || !is_node_id(&heartbeat.id)
                    || heartbeat.load.len() > crate::balance::SLICES
                {
                    continue;
                }
                let mut seen = seen.lock().unwrap();
                seen.retain(|_, (_, at)| at.elapsed() < DEAD_AFTER);
                seen.insert(heartbeat.id.clone(), (heartbeat, Instant::now()));
            }
        });
        Ok(members)
    }

    /// The nodes alive now, each with when its last heartbeat came.
    pub fn heard(&self) -> Vec<(Heartbeat, Instant)> {
        let mut seen = self.seen.lock().unwrap();
        seen.retain(|_, (_, at)| at.elapsed() < DEAD_AFTER);
        seen.values().cloned().collect()
    }

    /// The nodes alive now, by id.
    pub fn alive(&self) -> Vec<Heartbeat> {
        let mut seen = self.seen.lock().unwrap();
        seen.retain(|_, (_, at)| at.elapsed() < DEAD_AFTER);
        let mut alive: Vec<Heartbeat> = seen.values().map(|(h, _)| h.clone()).collect();
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        alive
    }

    /// Whether node `id` is alive now.
    pub fn is_alive(&self, id: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.get(id)
            .is_some_and(|(_, at)| at.elapsed() < DEAD_AFTER)
    }

    /// The ids of the workers alive now and taking invocations (not
    /// leaving).
    /// (Asked on every invocation: only the ids are copied.)
    pub fn workers(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.values()
            .filter(|(node, at)| {
                node.runs_invocations && !node.leaving && at.elapsed() < DEAD_AFTER
            })
            .map(|(node, _)| node.id.clone())
            .collect()
    }
}
