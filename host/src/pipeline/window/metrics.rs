//! The stage's gauges and counters for `/metrics` (recorded directly; a
//! no-op without an admin endpoint): late records, open windows, state
//! bytes, the stage watermark and idle partitions.

use std::time::Instant;

use super::AggregateNode;

pub fn late(node: &str, n: usize) {
    if n > 0 {
        ::metrics::counter!("sluice_window_late_records_total", "node" => node.to_string())
            .increment(n as u64);
    }
}

pub fn publish(n: &AggregateNode, now: Instant) {
    let node = n.node.clone();
    ::metrics::gauge!("sluice_window_open", "node" => node.clone()).set(n.store.len() as f64);
    ::metrics::gauge!("sluice_window_state_bytes", "node" => node.clone())
        .set((n.store.bytes() + n.keyed_bytes) as f64);
    ::metrics::gauge!("sluice_window_idle_partitions", "node" => node.clone())
        .set(n.marks.idle(now) as f64);
    let wm = n.marks.stage();
    if wm != i64::MIN {
        ::metrics::gauge!("sluice_window_watermark_seconds", "node" => node)
            .set(wm as f64 / 1000.0);
    }
}
