//! Writes invocation records and their console output in the background, in
//! batches, so that invocations never wait for the disk; and prunes what is
//! past the node's retention.
//!
//! The queue is bounded in records and in (approximate) bytes: when the
//! writer is behind, records are dropped and counted
//! (`isola_records_dropped_total`) rather than held in memory.

use isola_store::{InvocationRecord, Registry, Retention};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const CAPACITY: usize = 65_536;
const BATCH: usize = 4096;
/// How long the writer lets records gather before writing a batch.
const GATHER: Duration = Duration::from_millis(25);
/// What a record costs besides its text, roughly.
const RECORD_OVERHEAD: usize = 256;
/// What a console line costs besides its text, roughly.
const LINE_OVERHEAD: usize = 32;

/// How much memory a queued record takes, roughly.
pub fn approximate_size(record: &InvocationRecord) -> usize {
    let text = record.id.len()
        + record.function.len()
        + record.error_message.as_ref().map_or(0, String::len);
    let lines: usize = record
        .logs
        .iter()
        .map(|l| l.message.len() + LINE_OVERHEAD)
        .sum();
    RECORD_OVERHEAD + text + lines
}

/// The sending side of the record writer.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<(InvocationRecord, usize)>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    dropped: Counter,
    writer: Arc<Writer>,
}

/// The writer task, and how to ask it to write what is queued and stop.
struct Writer {
    stop: tokio::sync::Notify,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long a stop waits for the queued records to be written.
const FLUSH_TIME: Duration = Duration::from_secs(5);

impl Recorder {
    /// Starts the writer task on the current tokio runtime; at most
    /// `max_bytes` of records wait for it, and drops go to `dropped`.
    pub fn start(registry: Arc<dyn Registry>, max_bytes: usize, dropped: Counter) -> Self {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let writer = Arc::new(Writer {
            stop: tokio::sync::Notify::new(),
            task: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(write_batches(
            registry,
            receiver,
            queued_bytes.clone(),
            writer.clone(),
        ));
        *writer.task.lock().unwrap() = Some(task);
        Self {
            sender,
            queued_bytes,
            max_bytes,
            dropped,
            writer,
        }
    }

    /// Writes what is queued (for at most a few seconds) and stops the
    /// writer; records queued later are not written. For a node's shutdown.
    pub async fn flush(&self) {
        self.writer.stop.notify_one();
        let task = self.writer.task.lock().unwrap().take();
        if let Some(task) = task {
            if tokio::time::timeout(FLUSH_TIME, task).await.is_err() {
                tracing::warn!("invocation records still queued {FLUSH_TIME:?} after the shutdown");
            }
        }
    }

    /// Queues a record; drops it (and counts it) when the writer is behind.
    pub fn record(&self, record: InvocationRecord) {
        let size = approximate_size(&record);
        let before = self.queued_bytes.fetch_add(size, Ordering::SeqCst);
        if before.saturating_add(size) > self.max_bytes
            || self.sender.try_send((record, size)).is_err()
        {
            self.queued_bytes.fetch_sub(size, Ordering::SeqCst);
            self.dropped.inc();
        }
    }

    /// Records dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

async fn write_batches(
    registry: Arc<dyn Registry>,
    mut receiver: mpsc::Receiver<(InvocationRecord, usize)>,
    queued_bytes: Arc<AtomicUsize>,
    writer: Arc<Writer>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            received = receiver.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
            }
            () = writer.stop.notified() => stopping = true,
        }
        // Give a burst a moment to gather into one transaction.
        if batch.len() < BATCH && !stopping {
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                () = writer.stop.notified() => stopping = true,
            }
        }
        loop {
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let bytes: usize = batch.iter().map(|(_, size)| size).sum();
            let records = batch.drain(..).map(|(record, _)| record).collect();
            if let Err(error) = registry.record_invocations(records).await {
                tracing::warn!(%error, "could not store invocation records");
            }
            queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            // Stopping, everything queued goes; otherwise one batch a turn.
            if !stopping {
                break;
            }
        }
    }
}

/// Prunes the registry to `retention` every `every`, for as long as the
/// runtime runs.
pub fn spawn_pruner(registry: Arc<dyn Registry>, retention: Retention, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match registry.prune(&retention).await {
                Ok(pruned) if pruned.invocations + pruned.logs > 0 => {
                    tracing::info!(
                        invocations = pruned.invocations,
                        logs = pruned.logs,
                        "pruned records past retention"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not prune records"),
            }
        }
    });
}

#[cfg(test)]
mod tests;
