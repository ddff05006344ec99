//! Percentiles and formatting of latency samples.

use std::time::Duration;

/// Latency samples.
#[derive(Debug, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// The `p`-th percentile (0–100), nearest rank.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// The samples themselves.
    pub fn into_inner(self) -> Vec<Duration> {
        self.0
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// A one-line summary in microseconds.
    pub fn summary_us(&mut self) -> serde_json::Value {
        serde_json::json!({
            "n": self.len(),
            "p50_us": self.percentile(50.0).as_micros() as u64,
            "p99_us": self.percentile(99.0).as_micros() as u64,
            "max_us": self.percentile(100.0).as_micros() as u64,
        })
    }
}
