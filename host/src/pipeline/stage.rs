//! A transform stage: one OS thread owning one long-lived plugin instance.
//! Plugin calls are synchronous CPU work, so they get a thread rather than
//! blocking a tokio worker; channels give backpressure in both directions.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug_span, warn};

use super::align::{Aligner, Event};
use super::edge::{Envelope, Outputs};
use super::msg::{Ack, Request};
use super::stats::NodeStats;
use crate::batch::{Batch, BatchData, RecordMeta};
use crate::plugin::host::StateMap;
use crate::plugin::{wire, PluginError, TransformPlugin};
use crate::sink::dlq;

/// Extra plugin calls allowed to isolate the bad records of one failed batch
/// (a batch of 4096 with one poison record needs about 2 × 12).
const ISOLATION_CALLS: u32 = 32;

pub struct StageNode {
    pub node: String,
    pub plugin: TransformPlugin,
    pub inputs: usize,
    pub rx: mpsc::Receiver<Envelope>,
    pub out: Outputs,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub requests: mpsc::UnboundedSender<Request>,
    pub stats: Arc<NodeStats>,
    pub state: StateMap,
}

impl StageNode {
    pub fn spawn(self) -> std::thread::JoinHandle<()> {
        let name = format!("stage-{}", self.node.trim_start_matches("stages."));
        std::thread::Builder::new().name(name).spawn(move || self.run()).expect("spawn stage thread")
    }

    fn run(mut self) {
        let mut aligner = Aligner::new(self.inputs);
        let mut events = Vec::new();
        while let Some(env) = self.rx.blocking_recv() {
            aligner.offer(env, &mut events);
            for ev in events.drain(..) {
                match ev {
                    Event::Data(batch, _) => {
                        if let Err(e) = self.process(batch) {
                            let _ = self.requests.send(Request::Failed { node: self.node.clone(), error: e.to_string() });
                            return;
                        }
                    }
                    Event::Barrier(b) => {
                        let state = snapshot(&self.state);
                        let _ = self.acks.send(Ack { node: self.node.clone(), epoch: b.epoch, state });
                        if self.out.blocking_barrier(b).is_err() || b.last {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn process(&mut self, batch: Batch) -> Result<(), super::edge::Closed> {
        let n = batch.len();
        let span = debug_span!("batch", stage = %self.node, records = n, partition = %batch.origin.partition);
        let _g = span.enter();
        self.stats.add_in(n);
        self.stats.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let takes = wire::from_wit_format(self.plugin.info().takes);
        // `raw` is what the DLQ shows for a record: the record as it arrived,
        // not the host's conversion of it (same indexes as `batch`).
        let (batch, raw) = match crate::convert::to_format_lenient(batch.clone(), takes) {
            Ok((converted, refused)) => {
                // Records the conversion cannot represent go to the DLQ; the rest go on.
                let entries = dlq::entries(&self.node, &batch, refused.iter().map(|r| (r.index, r.code.as_str(), r.message.as_str())));
                self.stats.add_rejected(entries.len());
                self.out.blocking_dead_letters(&batch.origin, entries)?;
                if converted.is_empty() {
                    return Ok(());
                }
                let raw = if refused.is_empty() { batch } else { converted.clone() };
                (converted, raw)
            }
            Err(e) => {
                let msg = format!("cannot convert the batch to {takes} for plugin {}: {e}", self.plugin.name());
                return self.quarantine(&batch, "convert_error", &msg);
            }
        };
        let started = Instant::now();
        let mut result = self.call(&batch);
        if let Err(e) = &result {
            // Retry once on a fresh instance (a trap may come from state the
            // instance accumulated, not from these records).
            warn!(error = %e, "plugin call failed; retrying the batch on a fresh instance");
            result = self.call(&batch);
        }
        self.stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(out) => self.emit(&batch, &raw, out),
            Err(e) => {
                warn!(error = %e, records = n, "plugin failed twice; isolating the offending records");
                self.stats.failed_batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut budget = ISOLATION_CALLS;
                self.isolate(&batch, &raw, e, &mut budget)
            }
        }
    }

    /// The batch fails as a whole: bisect it so only the records that make
    /// the plugin fail go to the DLQ and the rest go on. When both halves
    /// fail the failure is not about particular records (a plugin that traps
    /// on everything): both are quarantined without further calls. A call
    /// budget bounds the rest, because each failing call may cost a timeout.
    fn isolate(&mut self, batch: &Batch, raw: &Batch, error: PluginError, budget: &mut u32) -> Result<(), super::edge::Closed> {
        if batch.len() <= 1 || *budget < 2 {
            return self.quarantine(raw, error.code(), &error.to_string());
        }
        *budget -= 2;
        let (mid, n) = (batch.len() / 2, batch.len());
        let halves = [batch.slice(0, mid), batch.slice(mid, n - mid)];
        let raws = [raw.slice(0, mid), raw.slice(mid, n - mid)];
        let results = [self.call(&halves[0]), self.call(&halves[1])];
        if let [Err(a), Err(b)] = &results {
            self.quarantine(&raws[0], a.code(), &a.to_string())?;
            return self.quarantine(&raws[1], b.code(), &b.to_string());
        }
        for ((half, raw), result) in halves.iter().zip(&raws).zip(results) {
            match result {
                Ok(out) => self.emit(half, raw, out)?,
                Err(e) => self.isolate(half, raw, e, budget)?,
            }
        }
        Ok(())
    }

    /// One plugin call, with the output checked against the contract.
    fn call(&mut self, batch: &Batch) -> Result<Checked, PluginError> {
        let (plugin, stage) = (self.plugin.name().to_string(), self.node.clone());
        let contract = |message: String| PluginError::Contract { plugin: plugin.clone(), stage: stage.clone(), message };
        let input = wire::encode(&batch.data).map_err(contract)?;
        let out = self.plugin.process(&input)?;
        let n = batch.len();
        let (data, count) = wire::decode(out.output).map_err(contract)?;
        if count != out.origin.len() {
            return Err(contract(format!("returned {count} records but {} origin indexes", out.origin.len())));
        }
        let meta = batch.meta_for(&out.origin).map_err(|i| contract(format!("origin index {i} is out of range (batch of {n})")))?;
        if let Some(r) = out.rejected.iter().find(|r| r.index as usize >= n) {
            return Err(contract(format!("rejected index {} is out of range (batch of {n})", r.index)));
        }
        Ok(Checked { data, meta, rejected: out.rejected })
    }

    fn emit(&mut self, input: &Batch, raw: &Batch, out: Checked) -> Result<(), super::edge::Closed> {
        let entries = dlq::entries(&self.node, raw, out.rejected.iter().map(|r| (r.index as usize, r.code.as_str(), r.message.as_str())));
        self.stats.add_rejected(entries.len());
        self.out.blocking_dead_letters(&input.origin, entries)?;
        if !out.meta.is_empty() {
            self.stats.add_out(out.meta.len());
            self.out.blocking_send(Batch { origin: input.origin.clone(), meta: out.meta, data: out.data })?;
        }
        Ok(())
    }

    /// Send every record of the batch to the DLQ with the reason.
    fn quarantine(&mut self, batch: &Batch, code: &str, message: &str) -> Result<(), super::edge::Closed> {
        let entries = dlq::entries(&self.node, batch, (0..batch.len()).map(|i| (i, code, message)));
        self.stats.add_rejected(batch.len());
        self.out.blocking_dead_letters(&batch.origin, entries)
    }
}

struct Checked {
    data: BatchData,
    meta: Vec<RecordMeta>,
    rejected: Vec<crate::plugin::bindings::types::Rejection>,
}

/// Stage keyed state for the checkpoint (hex pairs; `None` when empty).
pub fn snapshot(state: &StateMap) -> Option<serde_json::Value> {
    let m = state.lock().expect("state lock");
    if m.is_empty() {
        return None;
    }
    Some(serde_json::Value::Array(
        m.iter().map(|(k, v)| serde_json::json!([hex::encode(k), hex::encode(v)])).collect(),
    ))
}

/// Inverse of `snapshot`.
pub fn restore(state: &StateMap, v: Option<&serde_json::Value>) {
    let Some(serde_json::Value::Array(pairs)) = v else { return };
    let mut m = state.lock().expect("state lock");
    for p in pairs {
        if let (Some(k), Some(v)) = (p.get(0).and_then(|k| k.as_str()), p.get(1).and_then(|v| v.as_str())) {
            if let (Ok(k), Ok(v)) = (hex::decode(k), hex::decode(v)) {
                m.insert(k, v);
            }
        }
    }
}

