//! Prometheus metrics of the node.

use isola_core::{InvokerStats, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcomes {
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Starts {
    function: String,
    start: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Function {
    function: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ])
}

/// The node's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<Outcomes, Counter>,
    starts: Family<Starts, Counter>,
    duration: Family<Function, Histogram, fn() -> Histogram>,
    cpu: Family<Function, Histogram, fn() -> Histogram>,
    warm_instances: Gauge,
    warm_memory: Gauge<u64, AtomicU64>,
    resident_memory: Gauge<u64, AtomicU64>,
    /// Invocation records dropped because the writer was behind.
    pub records_dropped: Counter,
}

/// One function's series of the families (handles sharing their values),
/// made when its active deployment is loaded, so that counting an
/// invocation builds no labels and takes no lock.
pub struct FunctionSeries {
    ok: Counter,
    cold: Counter,
    warm: Counter,
    duration: Histogram,
    cpu: Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("isola");
        let metrics = Self {
            invocations: Family::default(),
            starts: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            cpu: Family::new_with_constructor(latency_histogram),
            warm_instances: Gauge::default(),
            warm_memory: Gauge::default(),
            resident_memory: Gauge::default(),
            records_dropped: Counter::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "invocations",
            "Invocations by function and outcome (ok or an error code)",
            metrics.invocations.clone(),
        );
        registry.register(
            "starts",
            "Invocations by function and start kind (cold or warm)",
            metrics.starts.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Wall time of invocations",
            metrics.duration.clone(),
        );
        registry.register(
            "invocation_cpu_seconds",
            "CPU time of invocations",
            metrics.cpu.clone(),
        );
        registry.register(
            "warm_isolates",
            "Warm idle isolates held",
            metrics.warm_instances.clone(),
        );
        registry.register(
            "warm_isolate_memory_bytes",
            "Memory held by warm idle isolates",
            metrics.warm_memory.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the node process",
            metrics.resident_memory.clone(),
        );
        registry.register(
            "records_dropped",
            "Invocation records dropped because the record writer was behind",
            metrics.records_dropped.clone(),
        );
        *metrics.registry.lock().unwrap() = registry;
        metrics
    }

    /// Counts one invocation of `function`, whose series is `series`.
    pub fn observe(&self, series: &FunctionSeries, function: &str, outcome: &Outcome) {
        match &outcome.result {
            Ok(_) => series.ok.inc(),
            Err(error) => self
                .invocations
                .get_or_create(&Outcomes {
                    function: function.to_string(),
                    outcome: error.code.as_str().to_string(),
                })
                .inc(),
        };
        if outcome.metrics.cold_start {
            series.cold.inc();
        } else {
            series.warm.inc();
        }
        series
            .duration
            .observe(outcome.metrics.duration_us as f64 / 1e6);
        series.cpu.observe(outcome.metrics.cpu_us as f64 / 1e6);
    }

    /// The series of `function` (the same ones on every call).
    pub fn series(&self, function: &str) -> Arc<FunctionSeries> {
        let name = || function.to_string();
        let starts = |start: &str| {
            self.starts
                .get_or_create(&Starts {
                    function: name(),
                    start: start.into(),
                })
                .clone()
        };
        let key = Function { function: name() };
        Arc::new(FunctionSeries {
            ok: self
                .invocations
                .get_or_create(&Outcomes {
                    function: name(),
                    outcome: "ok".into(),
                })
                .clone(),
            cold: starts("cold"),
            warm: starts("warm"),
            duration: self.duration.get_or_create(&key).clone(),
            cpu: self.cpu.get_or_create(&key).clone(),
        })
    }

    /// The text exposition, with gauges read from `stats`.
    pub fn render(&self, stats: InvokerStats) -> String {
        self.warm_instances.set(stats.warm_instances as i64);
        self.warm_memory.set(stats.warm_memory_bytes);
        self.resident_memory.set(resident_memory_bytes());
        let mut text = String::new();
        let registry = self.registry.lock().unwrap();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's resident memory, from `/proc/self/status` (0 elsewhere).
fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}
