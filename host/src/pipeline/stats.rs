//! Per-node counters for the run summary and metrics. Lock-free: updated on
//! the hot path by the node that owns them, read by the reporter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct NodeStats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    /// Files or objects committed (sinks).
    pub outputs: AtomicU64,
    /// Records a sink put in a Hive default partition (partition column
    /// absent or null).
    pub default_partition: AtomicU64,
    /// The most files a sink had open at once, and how many it finished
    /// early because of its cap on open files.
    pub open_files_peak: AtomicU64,
    pub files_finished_early: AtomicU64,
    /// Nanoseconds spent in the node's own work (plugin calls, encoding).
    pub busy_ns: AtomicU64,
}

impl NodeStats {
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Relaxed);
    }
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Relaxed);
    }
    pub fn add_rejected(&self, n: usize) {
        self.rejected.fetch_add(n as u64, Relaxed);
    }
    pub fn snapshot(&self) -> NodeSummary {
        NodeSummary {
            records_in: self.records_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            batches: self.batches.load(Relaxed),
            failed_batches: self.failed_batches.load(Relaxed),
            outputs: self.outputs.load(Relaxed),
            default_partition: self.default_partition.load(Relaxed),
            open_files_peak: self.open_files_peak.load(Relaxed),
            files_finished_early: self.files_finished_early.load(Relaxed),
            busy_ms: self.busy_ns.load(Relaxed) / 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeSummary {
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    pub batches: u64,
    pub failed_batches: u64,
    pub outputs: u64,
    pub default_partition: u64,
    pub open_files_peak: u64,
    pub files_finished_early: u64,
    pub busy_ms: u64,
}

impl NodeSummary {
    /// Fraction of the node's input it rejected (to the DLQ); `None` when
    /// it received nothing.
    pub fn reject_rate(&self) -> Option<f64> {
        (self.records_in > 0).then(|| self.rejected as f64 / self.records_in as f64)
    }
}

/// Above this fraction of rejected input a run ends with a warning.
pub const WARN_REJECT_RATE: f64 = 0.10;

/// Nodes (sources, stages, sinks; not the DLQ) that rejected more than
/// `threshold` of their input, with that rate, in node order.
pub fn rejecting_more_than(
    nodes: &BTreeMap<String, NodeSummary>,
    threshold: f64,
) -> Vec<(&str, &NodeSummary, f64)> {
    nodes
        .iter()
        .filter(|(k, _)| k.contains('.'))
        .filter_map(|(k, n)| {
            n.reject_rate()
                .filter(|r| *r > threshold)
                .map(|r| (k.as_str(), n, r))
        })
        .collect()
}

/// Checkpoint progress, written by the coordinator, read by the admin endpoint.
#[derive(Debug, Default)]
pub struct Progress {
    /// Epoch of the last checkpoint written (the resume point).
    pub epoch: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Wall-clock time the last checkpoint was written (Unix ms; 0 = none yet).
    pub last_unix_ms: AtomicU64,
    /// Barrier injected → checkpoint written, for the last checkpoint.
    pub last_duration_ms: AtomicU64,
}

impl Progress {
    pub fn checkpointed(&self, epoch: u64, took: std::time::Duration) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.epoch.store(epoch, Relaxed);
        self.checkpoints.fetch_add(1, Relaxed);
        self.last_unix_ms.store(now.as_millis() as u64, Relaxed);
        self.last_duration_ms.store(took.as_millis() as u64, Relaxed);
    }
}

/// All nodes' counters, keyed by `sources.NAME` / `stages.NAME` / `sinks.NAME`,
/// and the checkpoint progress.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    nodes: Arc<Mutex<BTreeMap<String, Arc<NodeStats>>>>,
    pub progress: Arc<Progress>,
}

impl Registry {
    pub fn node(&self, key: &str) -> Arc<NodeStats> {
        self.nodes.lock().expect("stats lock").entry(key.to_string()).or_default().clone()
    }
    pub fn snapshot(&self) -> BTreeMap<String, NodeSummary> {
        self.nodes.lock().expect("stats lock").iter().map(|(k, v)| (k.clone(), v.snapshot())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_rates_above_a_threshold_skip_the_dlq_and_idle_nodes() {
        let n = |i, r| NodeSummary {
            records_in: i,
            rejected: r,
            ..Default::default()
        };
        let nodes: BTreeMap<String, NodeSummary> = [
            ("sources.a".to_string(), n(100, 0)),
            ("stages.v".to_string(), n(100, 11)),
            ("stages.w".to_string(), n(100, 10)),
            ("sinks.s".to_string(), n(0, 0)),
            ("dlq".to_string(), n(11, 11)),
        ]
        .into();
        let over = rejecting_more_than(&nodes, WARN_REJECT_RATE);
        assert_eq!(
            over.iter().map(|(k, _, r)| (*k, *r)).collect::<Vec<_>>(),
            vec![("stages.v", 0.11)]
        );
        assert!(rejecting_more_than(&nodes, 1.0).is_empty());
        assert_eq!(rejecting_more_than(&nodes, 0.0).len(), 2);
    }
}
