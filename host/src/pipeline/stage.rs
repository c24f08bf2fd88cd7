//! A transform stage: one OS thread owning one long-lived plugin instance.
//! Plugin calls are synchronous CPU work, so they get a thread rather than
//! blocking a tokio worker; channels give backpressure in both directions.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug_span, warn};

use super::align::{Aligner, Event};
use super::edge::{Envelope, Outputs};
use super::msg::{Ack, Request};
use super::stats::NodeStats;
use crate::batch::{Batch, BatchData, RecordMeta, Rejection};
use crate::dead_letter::DeadLetter;
use crate::plugin::host::StateMap;
use crate::plugin::{wire, PluginError, TransformPlugin};

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
                    // Never sent to a stage (dead letters go to the DLQ sink only): pass them on.
                    Event::DeadLetters(letters) => {
                        if self.out.blocking_dead_letters(letters).is_err() {
                            return;
                        }
                    }
                    // The stage keeps each record's origin: downstream sees the same partitions.
                    Event::Partitions(p) => {
                        if self.out.blocking_partitions(p).is_err() {
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

    fn process(&mut self, mut batch: Batch) -> Result<(), super::edge::Closed> {
        let n = batch.len();
        let span = debug_span!("batch", stage = %self.node, records = n, partition = %batch.origin.partition);
        let _g = span.enter();
        self.stats.add_in(n);
        self.stats.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let takes = wire::from_wit_format(self.plugin.info().takes);
        let (converted, raw) = match to_plugin_format(&self.node, &batch, takes, self.plugin.name()) {
            Ok(Converted { batch: converted, raw, letters }) => {
                self.stats.add_rejected(letters.len());
                self.out.blocking_dead_letters(letters)?;
                if converted.is_empty() {
                    return Ok(());
                }
                (converted, raw)
            }
            Err(msg) => return self.quarantine(&batch, "convert_error", &msg),
        };
        let started = Instant::now();
        let mut result = self.call(&converted);
        if let Err(e) = &result {
            // Retry once on a fresh instance (a trap may come from state the
            // instance accumulated, not from these records).
            warn!(error = %e, "plugin call failed; retrying the batch on a fresh instance");
            result = self.call(&converted);
        }
        self.stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(out) if out.filters() => {
                // The usual transform keeps records in order, maybe not all:
                // the input's metadata moves on instead of being copied.
                let letters = DeadLetter::all(&self.node, &raw, out.rejected);
                drop(raw);
                let meta = match converted {
                    Cow::Owned(b) => b.meta,
                    Cow::Borrowed(_) => std::mem::take(&mut batch.meta),
                };
                self.send(&batch.origin, letters, pick(meta, &out.origin), out.data)
            }
            Ok(out) => self.emit(&converted, &raw, out),
            Err(e) => {
                warn!(error = %e, records = n, "plugin failed twice; isolating the offending records");
                self.stats.failed_batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut budget = ISOLATION_CALLS;
                self.isolate(&converted, &raw, e, &mut budget)
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

    /// One plugin call, with the output checked against the contract. Its
    /// state writes are committed only when it succeeded and kept the
    /// contract, so a failed attempt leaves no trace in the stage's state.
    fn call(&mut self, batch: &Batch) -> Result<Checked, PluginError> {
        let (plugin, stage) = (self.plugin.name().to_string(), self.node.clone());
        let contract = |message: String| PluginError::Contract { plugin: plugin.clone(), stage: stage.clone(), message };
        let input = wire::encode(&batch.data).map_err(contract)?;
        let (out, writes) = self.plugin.process(&input)?;
        let n = batch.len();
        let (data, count) = wire::decode(out.output).map_err(contract)?;
        if count != out.origin.len() {
            return Err(contract(format!("returned {count} records but {} origin indexes", out.origin.len())));
        }
        if let Some(i) = out.origin.iter().find(|&&i| i as usize >= n) {
            return Err(contract(format!("origin index {i} is out of range (batch of {n})")));
        }
        if let Some(r) = out.rejected.iter().find(|r| r.index as usize >= n) {
            return Err(contract(format!("rejected index {} is out of range (batch of {n})", r.index)));
        }
        writes.commit(&self.state);
        let mut rejected: Vec<Rejection> = out.rejected.into_iter().map(wire::from_wit_rejection).collect();
        let (data, origin) = match data {
            BatchData::Json(j) => {
                // Sinks write a plugin's JSON documents as they are: one that
                // is not a one-line object would corrupt an NDJSON file.
                let (j, origin, bad) = wire::keep_json_objects(j, out.origin);
                rejected.extend(bad.into_iter().map(|(i, m)| {
                    Rejection::new(i as usize, "plugin_contract", format!("plugin {plugin} returned {m}"))
                }));
                (BatchData::Json(j), origin)
            }
            data => (data, out.origin),
        };
        Ok(Checked { data, origin, rejected })
    }

    fn emit(&mut self, input: &Batch, raw: &Batch, out: Checked) -> Result<(), super::edge::Closed> {
        let letters = DeadLetter::all(&self.node, raw, out.rejected);
        let meta = input.meta_at(&out.origin);
        self.send(&input.origin, letters, meta, out.data)
    }

    fn send(
        &mut self,
        origin: &Arc<crate::batch::Origin>,
        letters: Vec<DeadLetter>,
        meta: Vec<RecordMeta>,
        data: BatchData,
    ) -> Result<(), super::edge::Closed> {
        self.stats.add_rejected(letters.len());
        self.out.blocking_dead_letters(letters)?;
        if !meta.is_empty() {
            self.stats.add_out(meta.len());
            self.out.blocking_send(Batch { origin: origin.clone(), meta, data })?;
        }
        Ok(())
    }

    /// Send every record of the batch to the DLQ with the reason.
    fn quarantine(&mut self, batch: &Batch, code: &str, message: &str) -> Result<(), super::edge::Closed> {
        let letters = DeadLetter::all(&self.node, batch, (0..batch.len()).map(|i| Rejection::new(i, code, message)));
        self.stats.add_rejected(batch.len());
        self.out.blocking_dead_letters(letters)
    }
}

/// A batch converted to the format a plugin takes; borrowed as it is when
/// it already is in that format (the common case: no copy of the records'
/// metadata per batch).
pub(super) struct Converted<'a> {
    pub batch: Cow<'a, Batch>,
    /// What the DLQ shows for a record: the record as it arrived, not the
    /// host's conversion of it (same indexes as `batch`).
    pub raw: Cow<'a, Batch>,
    /// Records the conversion cannot represent, for the DLQ; the rest go on.
    pub letters: Vec<DeadLetter>,
}

/// `batch` in the format `takes` for the plugin of stage `node`; `Err`: the
/// batch as a whole cannot be converted (the caller quarantines it).
pub(super) fn to_plugin_format<'a>(node: &str, batch: &'a Batch, takes: crate::batch::Format, plugin: &str) -> Result<Converted<'a>, String> {
    if batch.format() == takes {
        return Ok(Converted { batch: Cow::Borrowed(batch), raw: Cow::Borrowed(batch), letters: Vec::new() });
    }
    let (converted, refused) = crate::convert::to_format_lenient(batch.clone(), takes)
        .map_err(|e| format!("cannot convert the batch to {takes} for plugin {plugin}: {e}"))?;
    // Without the refused records, `raw` still lines up with `converted`.
    let skip: Vec<usize> = refused.iter().map(|r| r.index).collect();
    let letters = DeadLetter::all(node, batch, refused);
    let raw = if skip.is_empty() { Cow::Borrowed(batch) } else { Cow::Owned(without(batch, skip)) };
    Ok(Converted { batch: Cow::Owned(converted), raw, letters })
}

/// The records of `batch` except those at `skip` (increasing indexes), in
/// the format they arrived in.
pub(crate) fn without(batch: &Batch, skip: impl IntoIterator<Item = usize>) -> Batch {
    let skip: std::collections::BTreeSet<usize> = skip.into_iter().collect();
    let keep: Vec<usize> = (0..batch.len()).filter(|i| !skip.contains(i)).collect();
    let data = match &batch.data {
        BatchData::Json(j) => {
            let mut out = crate::batch::JsonRecords::with_capacity(keep.len(), j.buf.len());
            for &i in &keep {
                out.push(j.get(i));
            }
            BatchData::Json(out)
        }
        BatchData::Arrow(b) => {
            let idx = arrow::array::UInt32Array::from_iter_values(keep.iter().map(|&i| i as u32));
            BatchData::Arrow(arrow::compute::take_record_batch(b, &idx).expect("indexes within the batch"))
        }
    };
    Batch { origin: batch.origin.clone(), meta: keep.iter().map(|&i| batch.meta[i].clone()).collect(), data }
}

/// A plugin's answer that kept the contract (every index is in range).
struct Checked {
    data: BatchData,
    /// For each output record, the index of the input record it came from.
    origin: Vec<u32>,
    rejected: Vec<Rejection>,
}

impl Checked {
    /// Every output record comes from a different input record, in input
    /// order (a filter, or all records kept).
    fn filters(&self) -> bool {
        self.origin.windows(2).all(|w| w[0] < w[1])
    }
}

/// The metadata of the records at `origin` (strictly increasing indexes
/// into `meta`), moved out of `meta`.
fn pick(meta: Vec<RecordMeta>, origin: &[u32]) -> Vec<RecordMeta> {
    if origin.len() == meta.len() {
        return meta; // increasing and as many: every record, in order
    }
    let mut want = origin.iter().map(|&o| o as usize).peekable();
    let mut out = Vec::with_capacity(origin.len());
    for (i, m) in meta.into_iter().enumerate() {
        if want.next_if_eq(&i).is_some() {
            out.push(m);
        }
    }
    out
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

/// Inverse of `snapshot`: the state becomes exactly the checkpoint's (empty
/// without one), whatever `init` wrote while the plan was checked.
pub fn restore(state: &StateMap, v: Option<&serde_json::Value>) {
    let mut m = state.lock().expect("state lock");
    m.clear();
    let Some(serde_json::Value::Array(pairs)) = v else { return };
    for p in pairs {
        if let (Some(k), Some(v)) = (p.get(0).and_then(|k| k.as_str()), p.get(1).and_then(|v| v.as_str())) {
            if let (Ok(k), Ok(v)) = (hex::decode(k), hex::decode(v)) {
                m.insert(k, v);
            }
        }
    }
}


#[cfg(test)]
mod tests {
    #[test]
    fn pick_moves_the_metadata_of_a_filters_records() {
        use crate::batch::RecordMeta;
        let meta = |ns: &[u64]| ns.iter().map(|&n| RecordMeta::line(n)).collect::<Vec<_>>();
        assert_eq!(super::pick(meta(&[0, 1, 2, 3, 4]), &[1, 3, 4]), meta(&[1, 3, 4]));
        assert_eq!(super::pick(meta(&[0, 1, 2]), &[0, 1, 2]), meta(&[0, 1, 2]));
        assert_eq!(super::pick(meta(&[0, 1, 2]), &[]), meta(&[]));
    }

    use std::collections::BTreeSet;

    use serde_json::{json, Value};

    use super::*;
    use crate::batch::{JsonRecords, Origin};
    use crate::dead_letter::records_bytes;
    use crate::pipeline::edge::{Edge, Envelope};
    use crate::pipeline::msg::Msg;

    struct Harness {
        node: StageNode,
        out: mpsc::Receiver<Envelope>,
        dlq: mpsc::Receiver<Envelope>,
    }

    /// A stage around a real stand-in plugin, its outputs read back directly.
    fn harness(file: &str, config: Value, state: StateMap) -> Harness {
        let plugin = crate::plugin::testing::plugin(file, "s", config, state.clone()).expect("stand-in plugin");
        let (out_tx, out) = mpsc::channel(1024);
        let (dlq_tx, dlq) = mpsc::channel(1024);
        let (_, rx) = mpsc::channel(1);
        let node = StageNode {
            node: "stages.s".into(),
            plugin,
            inputs: 1,
            rx,
            out: Outputs {
                edges: vec![Edge { to: "sinks.out".into(), input: 0, tx: out_tx }],
                dlq: Some(Edge { to: "dlq".into(), input: 0, tx: dlq_tx }),
            },
            acks: mpsc::unbounded_channel().0,
            requests: mpsc::unbounded_channel().0,
            stats: Arc::default(),
            state,
        };
        Harness { node, out, dlq }
    }

    fn json_input(docs: &[String]) -> Batch {
        let mut j = JsonRecords::default();
        docs.iter().for_each(|d| j.push(d.as_bytes()));
        Batch {
            origin: Arc::new(Origin { source: "sources.in".into(), partition: "p".into() }),
            meta: (0..docs.len() as u64).map(RecordMeta::line).collect(),
            data: BatchData::Json(j),
        }
    }

    /// Every record received on `rx`, as JSON.
    fn received(rx: &mut mpsc::Receiver<Envelope>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(env) = rx.try_recv() {
            if let Msg::Data(b) = env.msg {
                out.extend(records_bytes(&b, 0..b.len()).iter().map(|r| serde_json::from_slice::<Value>(r).expect("json record")));
            }
        }
        out
    }

    /// Every dead letter received on `rx`.
    fn dead(rx: &mut mpsc::Receiver<Envelope>) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        while let Ok(env) = rx.try_recv() {
            if let Msg::DeadLetters(d) = env.msg {
                out.extend(d);
            }
        }
        out
    }

    fn state_keys(state: &StateMap) -> BTreeSet<String> {
        state.lock().unwrap().keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
    }

    #[test]
    fn bisection_applies_only_the_successful_calls_state() {
        // One key seen before the batch, a duplicate inside it, and one poison
        // record that makes the plugin trap after it wrote the batch's keys.
        let state = StateMap::default();
        state.lock().unwrap().insert(br#"k:"old""#.to_vec(), Vec::new());
        let mut h = harness("dedupe.wasm", json!({"key": "id", "trap_on": "POISON"}), state.clone());
        let mut docs: Vec<String> = (0..14).map(|i| format!(r#"{{"id":"n{i}"}}"#)).collect();
        docs.insert(9, r#"{"id":"p","x":"POISON"}"#.into());
        docs.push(r#"{"id":"old"}"#.into());
        docs.push(r#"{"id":"n3"}"#.into());
        h.node.process(json_input(&docs)).unwrap();

        let out = received(&mut h.out);
        let mut ids: Vec<&str> = out.iter().map(|r| r["id"].as_str().unwrap()).collect();
        ids.sort();
        let mut want: Vec<String> = (0..14).map(|i| format!("n{i}")).collect();
        want.sort();
        assert_eq!(ids, want, "every new key exactly once, nothing seen before, not the poison");

        let dlq = dead(&mut h.dlq);
        assert_eq!(dlq.len(), 1, "exactly the poison record is quarantined: {dlq:?}");
        assert_eq!((&*dlq[0].node, dlq[0].code.as_str()), ("stages.s", "plugin_trap"));
        assert_eq!(dlq[0].record, br#"{"id":"p","x":"POISON"}"#);
        assert_eq!(dlq[0].meta.seq, "9");
        assert_eq!(&*dlq[0].origin.source, "sources.in");

        let keys = state_keys(&state);
        assert!(!keys.contains(r#"k:"p""#), "the poison's key is in the state: {keys:?}");
        for i in 0..14 {
            assert!(keys.contains(&format!(r#"k:"n{i}""#)), "n{i} missing from {keys:?}");
        }
        // The failed calls counted once for the batch; the instance was rebuilt after each trap.
        assert_eq!(h.node.stats.failed_batches.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_batch_after_a_failed_one_sees_no_trace_of_it() {
        let state = StateMap::default();
        let mut h = harness("dedupe.wasm", json!({"key": "id", "trap_on": "POISON"}), state.clone());
        // A batch where every record is poison: all quarantined, no key kept.
        h.node.process(json_input(&[r#"{"id":"a","x":"POISON"}"#.into(), r#"{"id":"b","x":"POISON"}"#.into()])).unwrap();
        assert_eq!(dead(&mut h.dlq).len(), 2);
        assert_eq!(state_keys(&state), BTreeSet::from(["m:key".to_string()]));
        h.node.process(json_input(&[r#"{"id":"a"}"#.into(), r#"{"id":"b"}"#.into()])).unwrap();
        assert_eq!(received(&mut h.out), [json!({"id": "a"}), json!({"id": "b"})]);
    }

    #[test]
    fn dead_letters_hold_records_as_they_arrived_after_a_partial_conversion() {
        // JSON in, an Arrow plugin: two records cannot become Arrow rows, and
        // the others' Arrow rendering differs from what arrived (`1` becomes
        // `"1"` in a column that also holds `"abc"`). Every record ends in the
        // DLQ (the taxi rules refuse them): each must be the original.
        let docs: Vec<String> =
            [r#"{"p":1}"#, r#"{"p":"abc"}"#, "not json", "[1,2]", r#"{"p":3,"q":1.50}"#].map(String::from).to_vec();
        let mut h = harness("validate.wasm", json!({}), StateMap::default());
        h.node.process(json_input(&docs)).unwrap();
        assert!(received(&mut h.out).is_empty());
        let mut dlq = dead(&mut h.dlq);
        dlq.sort_by_key(|e| e.meta.seq.parse::<u32>().unwrap());
        // Byte for byte as they arrived.
        let records: Vec<&[u8]> = dlq.iter().map(|e| e.record.as_slice()).collect();
        let want: Vec<&[u8]> = docs.iter().map(|d| d.as_bytes()).collect();
        assert_eq!(records, want, "{dlq:#?}");
    }

    #[test]
    fn restore_replaces_the_state() {
        let state = StateMap::default();
        state.lock().unwrap().insert(b"written-by-init-at-plan-time".to_vec(), Vec::new());
        restore(&state, Some(&json!([[hex::encode("a"), hex::encode("1")]])));
        assert_eq!(state_keys(&state), BTreeSet::from(["a".to_string()]));
        assert_eq!(snapshot(&state), Some(json!([[hex::encode("a"), hex::encode("1")]])));
        restore(&state, None);
        assert_eq!(snapshot(&state), None);
    }
}
