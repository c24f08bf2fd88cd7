//! Metrics through the `metrics` facade, rendered by the Prometheus exporter.
//!
//! Two kinds of sources feed it:
//! - code that knows a value when it happens records it directly, e.g. the
//!   Kinesis source's `sluice_kinesis_millis_behind_latest{source,shard}`
//!   (see [`kinesis_lag`]); without an admin endpoint no recorder is
//!   installed and those calls cost next to nothing;
//! - the per-node counters the runtime keeps anyway ([`Registry`]) are copied
//!   in at scrape time, so the hot path is not counted twice.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::pipeline::stats::Registry;

#[derive(Clone)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

static INSTALLED: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

impl Prometheus {
    /// The process-wide recorder, installed on first use.
    pub fn install() -> Result<Self, String> {
        INSTALLED
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new().build_recorder();
                let handle = recorder.handle();
                ::metrics::set_global_recorder(recorder)
                    .map(|()| handle)
                    .map_err(|e| format!("cannot install the metrics recorder: {e}"))
            })
            .clone()
            .map(|handle| Prometheus { handle })
    }

    /// Prometheus text for everything recorded, node counters refreshed first.
    pub fn render(&self, pipeline: &str, stats: &Registry) -> String {
        publish(pipeline, stats);
        self.handle.render()
    }
}

fn publish(pipeline: &str, stats: &Registry) {
    ::metrics::gauge!("sluice_info", "pipeline" => pipeline.to_string(), "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for (node, n) in stats.snapshot() {
        let counter = |name: &'static str, v: u64| ::metrics::counter!(name, "node" => node.clone()).absolute(v);
        counter("sluice_records_in_total", n.records_in);
        counter("sluice_records_out_total", n.records_out);
        counter("sluice_records_rejected_total", n.rejected);
        counter("sluice_batches_total", n.batches);
        counter("sluice_failed_batches_total", n.failed_batches);
        counter("sluice_outputs_committed_total", n.outputs);
        counter("sluice_default_partition_records_total", n.default_partition);
        counter("sluice_files_finished_early_total", n.files_finished_early);
        ::metrics::gauge!("sluice_open_files_peak", "node" => node.clone()).set(n.open_files_peak as f64);
        ::metrics::gauge!("sluice_busy_seconds", "node" => node.clone()).set(n.busy_ms as f64 / 1000.0);
    }
    let p = &stats.progress;
    ::metrics::gauge!("sluice_checkpoint_epoch").set(p.epoch.load(Relaxed) as f64);
    ::metrics::counter!("sluice_checkpoints_total").absolute(p.checkpoints.load(Relaxed));
    ::metrics::gauge!("sluice_checkpoint_last_timestamp_seconds").set(p.last_unix_ms.load(Relaxed) as f64 / 1000.0);
    ::metrics::gauge!("sluice_checkpoint_last_duration_seconds").set(p.last_duration_ms.load(Relaxed) as f64 / 1000.0);
}

/// MillisBehindLatest of one shard, as last reported by GetRecords or a
/// SubscribeToShard event. A finished shard is set to 0 (it is not behind).
pub fn kinesis_lag(source: &str, shard: &str, millis: i64) {
    ::metrics::gauge!("sluice_kinesis_millis_behind_latest", "source" => source.to_string(), "shard" => shard.to_string())
        .set(millis as f64);
}

/// One more SubscribeToShard subscription of a shard (fan-out renews every
/// `fan_out_renew_after`, and after errors).
pub fn kinesis_subscribed(source: &str, shard: &str) {
    ::metrics::counter!("sluice_kinesis_subscriptions_total", "source" => source.to_string(), "shard" => shard.to_string())
        .increment(1);
}
