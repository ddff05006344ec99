//! Writes invocation records and their console output in the background, in
//! batches, so that invocations never wait for the disk.

use isola_store::{InvocationRecord, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const CAPACITY: usize = 65_536;
const BATCH: usize = 512;

/// The sending side of the record writer.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<InvocationRecord>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(registry: Arc<dyn Registry>) -> Self {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        tokio::spawn(write_batches(registry, receiver));
        Self {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues a record; drops it (and counts it) when the writer is behind.
    pub fn record(&self, record: InvocationRecord) {
        if self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_batches(
    registry: Arc<dyn Registry>,
    mut receiver: mpsc::Receiver<InvocationRecord>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        // Give a burst a moment to gather into one transaction.
        tokio::time::sleep(Duration::from_millis(5)).await;
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        if let Err(error) = registry
            .record_invocations(std::mem::take(&mut batch))
            .await
        {
            tracing::warn!(%error, "could not store invocation records");
        }
    }
}
