//! An aggregate stage: event-time windows over an aggregate plugin, with the
//! windows, watermarks and accumulators owned by the host (and so in the
//! checkpoint). One OS thread, like a transform stage.
//!
//! Per input batch: one `extract` call (key, event time, value per record),
//! then the host assigns windows, sends records behind the watermark by more
//! than `allowed_lateness` to the DLQ (`late`), groups the rest by (window,
//! key) and makes one `accumulate` call with every group and its prior
//! state. Nothing of the batch is applied unless both calls succeeded (and
//! kept the contract), so retry and bisection work as for transforms.
//! Session windows merge, and the contract has no way to merge two
//! accumulators: their values are kept until the session fires and then
//! accumulated in one call for every session firing together.
//!
//! Firing: when the stage watermark minus `allowed_lateness` reaches a
//! window's end (after each batch, and on a timer so idle partitions stop
//! holding windows back), every such window fires in (end, key, start)
//! order: one `finish` per (window, key). At the end of a bounded input
//! (the drained last barrier) every open window fires. A record is late
//! when every window it belongs to has an end at or before the watermark it
//! sees (the watermark as moved by the records before it) minus the
//! lateness: with one partition this depends only on the input order, never
//! on batch boundaries, so a replay after a restart fires the same windows
//! with the same contents.
//!
//! Modules: `assign` (window arithmetic, session merge), `watermark`
//! (per-partition watermarks, idleness), `store` (open windows in firing
//! order, byte count, binary encoding), `fire` (firing, early firing, results and their
//! failures), `output` (ids, RFC 3339 times),
//! `snapshot` (checkpoint state, state-version migration), `metrics`,
//! `detached` (a stage driven by direct calls: tests, benchmarks).

pub mod assign;
pub mod detached;
mod fire;
mod metrics;
pub mod output;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod tests;
pub mod watermark;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug_span, warn};

use self::assign::{fixed_windows, merge_session, Span};
use self::store::{Entry, Store, WinKey};
use self::watermark::Watermarks;
use super::align::{Aligner, Event};
use super::edge::{Closed, Envelope, Outputs};
use super::msg::{Ack, Request};
use super::stats::NodeStats;
use super::stage::{to_plugin_format, Converted};
use crate::batch::{Batch, Rejection};
use crate::config::window::{WindowKind, Windowing};
use crate::dead_letter::DeadLetter;
use crate::plugin::columns::GroupsBuilder;
use crate::plugin::host::{StateMap, StateWrites};
use crate::plugin::{wire, AggregatePlugin, PluginError};

/// Extra plugin calls allowed to isolate the bad records of one failed batch.
const ISOLATION_CALLS: u32 = 32;

pub struct AggregateNode {
    /// `stages.NAME`.
    pub node: String,
    /// `NAME`, the first part of output ids.
    pub name: String,
    pub plugin: AggregatePlugin,
    pub windowing: Windowing,
    /// Bound on open windows plus keyed state, in bytes.
    pub state_memory: u64,
    pub inputs: usize,
    pub rx: mpsc::Receiver<Envelope>,
    pub out: Outputs,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub requests: mpsc::UnboundedSender<Request>,
    pub stats: Arc<NodeStats>,
    /// The stage's keyed state (`state` import), scoped to the stage.
    pub keyed: StateMap,
    pub store: Store,
    pub marks: Watermarks,
    /// Bytes of `keyed`, recounted when a call wrote to it.
    pub keyed_bytes: usize,
    /// To wait for input with a timeout from this plain thread.
    pub rt: tokio::runtime::Handle,
}

/// Why the node stops: downstream is gone, or a failure that must stop the run.
#[derive(Debug)]
pub enum Stop {
    Closed,
    Fatal(String),
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}

/// A batch's effect, computed without touching the node: applied only when
/// every plugin call of the batch succeeded.
struct Delta {
    rejected: Vec<Rejection>,
    late: Vec<Rejection>,
    /// Fixed windows: (window, key) → new accumulator.
    updates: Vec<(WinKey, Vec<u8>)>,
    /// Session windows: key → its sessions after the batch.
    sessions: Vec<(Vec<u8>, Vec<Work>)>,
    writes: StateWrites,
    partition: String,
    part_max: Option<i64>,
}

/// One session of a key while a batch is assigned: the stored sessions it
/// absorbed and the batch's values for it.
#[derive(Debug, Clone)]
struct Work {
    span: Span,
    originals: Vec<Span>,
    values: Vec<Vec<u8>>,
}

impl AggregateNode {
    pub fn spawn(self) -> std::thread::JoinHandle<()> {
        let name = format!("stage-{}", self.name);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run())
            .expect("spawn stage thread")
    }

    fn tick(&self) -> Duration {
        let w = &self.windowing;
        let t = (w.idle_timeout / 4).min(Duration::from_secs(1));
        let t = w.emit_every.map_or(t, |e| t.min(e / 2));
        t.max(Duration::from_millis(10))
    }

    fn run(mut self) {
        if let Err(Stop::Fatal(error)) = self.run_inner() {
            let _ = self.requests.send(Request::Failed {
                node: self.node.clone(),
                error,
            });
        }
    }

    fn run_inner(&mut self) -> Result<(), Stop> {
        let mut aligner = Aligner::new(self.inputs);
        let mut events = Vec::new();
        let tick = self.tick();
        let mut last_emit = Instant::now();
        loop {
            let rt = self.rt.clone();
            // The timer must be made inside the runtime: build it in the future.
            let rx = &mut self.rx;
            match rt.block_on(async { tokio::time::timeout(tick, rx.recv()).await }) {
                Ok(None) => return Ok(()),
                Ok(Some(env)) => aligner.offer(env, &mut events),
                Err(_) => {}
            }
            for ev in events.drain(..) {
                match ev {
                    Event::Data(batch, _) => self.process(batch)?,
                    Event::DeadLetters(letters) => self.out.blocking_dead_letters(letters)?,
                    // Not forwarded: this stage's results have their own origin.
                    Event::Partitions(p) => {
                        let now = Instant::now();
                        for part in &p.opened {
                            self.marks.open(&format!("{}/{part}", p.source), now);
                        }
                        for part in &p.closed {
                            self.marks.close(&format!("{}/{part}", p.source), now);
                        }
                    }
                    Event::Barrier(b) => {
                        if b.drained {
                            // The input is complete: every open window fires now.
                            self.fire(i64::MAX)?;
                        }
                        let state = snapshot::take(self);
                        let _ = self.acks.send(Ack {
                            node: self.node.clone(),
                            epoch: b.epoch,
                            state: Some(state),
                        });
                        self.out.blocking_barrier(b)?;
                        if b.last {
                            return Ok(());
                        }
                    }
                }
            }
            // Time alone moves the watermark when partitions go idle.
            let now = Instant::now();
            let wm = self.marks.advance(now);
            self.fire(wm.saturating_sub(self.windowing.allowed_lateness))?;
            if let Some(every) = self.windowing.emit_every {
                if now.duration_since(last_emit) >= every {
                    last_emit = now;
                    self.emit_early()?;
                }
            }
            metrics::publish(self, now);
        }
    }

    pub(crate) fn process(&mut self, batch: Batch) -> Result<(), Stop> {
        let n = batch.len();
        let span = debug_span!("batch", stage = %self.node, records = n, partition = %batch.origin.partition);
        let _g = span.enter();
        self.stats.add_in(n);
        self.stats
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let takes = wire::from_wit_format(self.plugin.info().takes);
        let (batch, raw) = match to_plugin_format(&self.node, &batch, takes, self.plugin.name()) {
            Ok(Converted { batch: converted, raw, letters }) => {
                self.stats.add_rejected(letters.len());
                self.out.blocking_dead_letters(letters)?;
                if converted.is_empty() {
                    return Ok(());
                }
                (converted, raw)
            }
            Err(msg) => return Ok(self.quarantine(&batch, "convert_error", &msg)?),
        };
        let started = Instant::now();
        let mut result = self.try_batch(&batch);
        if let Err(e) = &result {
            warn!(error = %e, "plugin call failed; retrying the batch on a fresh instance");
            result = self.try_batch(&batch);
        }
        match result {
            Ok(d) => self.apply(d, &raw)?,
            Err(e) => {
                warn!(error = %e, records = n, "plugin failed twice; isolating the offending records");
                self.stats
                    .failed_batches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut budget = ISOLATION_CALLS;
                self.isolate(&batch, &raw, e, &mut budget)?;
            }
        }
        let wm = self.marks.stage();
        self.fire(wm.saturating_sub(self.windowing.allowed_lateness))?;
        self.stats.busy_ns.fetch_add(
            started.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Bisect a failing batch (as a transform stage does): halves are tried
    /// and applied in order, so only records that make the plugin fail go to
    /// the DLQ; when both halves fail, both are quarantined at once.
    fn isolate(
        &mut self,
        batch: &Batch,
        raw: &Batch,
        error: PluginError,
        budget: &mut u32,
    ) -> Result<(), Stop> {
        if batch.len() <= 1 || *budget < 2 {
            return Ok(self.quarantine(raw, error.code(), &error.to_string())?);
        }
        *budget -= 2;
        let (mid, n) = (batch.len() / 2, batch.len());
        let halves = [batch.slice(0, mid), batch.slice(mid, n - mid)];
        let raws = [raw.slice(0, mid), raw.slice(mid, n - mid)];
        let first = self.try_batch(&halves[0]);
        let first = match first {
            Ok(d) => {
                self.apply(d, &raws[0])?;
                None
            }
            Err(e) => Some(e),
        };
        match (first, self.try_batch(&halves[1])) {
            (Some(a), Err(b)) => {
                self.quarantine(&raws[0], a.code(), &a.to_string())?;
                Ok(self.quarantine(&raws[1], b.code(), &b.to_string())?)
            }
            (Some(a), Ok(d)) => {
                self.apply(d, &raws[1])?;
                self.isolate(&halves[0], &raws[0], a, budget)
            }
            (None, Ok(d)) => self.apply(d, &raws[1]),
            (None, Err(b)) => self.isolate(&halves[1], &raws[1], b, budget),
        }
    }

    /// `extract`, window assignment, `accumulate`: the batch's effect, or the
    /// plugin error. Changes nothing in the node (the plugin instance aside).
    fn try_batch(&mut self, batch: &Batch) -> Result<Delta, PluginError> {
        let n = batch.len();
        let input = wire::encode(&batch.data).map_err(|m| self.plugin.contract(m))?;
        let (ex, mut writes) = self.plugin.extract(&input, n)?;
        let partition = format!("{}/{}", batch.origin.source, batch.origin.partition);
        let now = Instant::now();
        let others = self.marks.others(&partition, now);
        let mut part_max = self.marks.partition(&partition);
        let lateness = self.windowing.allowed_lateness;
        let kind = self.windowing.kind;
        let mut late = Vec::new();
        // Fixed windows: (window, key) → group number, and per group the
        // records in it, in input order (keys borrowed from the plugin's answer).
        let mut slots: foldhash::HashMap<(Span, &[u8]), u32> = Default::default();
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut sessions: HashMap<Vec<u8>, Vec<Work>> = HashMap::new();
        let mut spans = Vec::new();
        for i in 0..ex.len() {
            let t = ex.event_time_ms[i];
            let key = ex.keys.get(i);
            part_max = part_max.max(t);
            let wm = self.marks.with(part_max, others);
            // Windows ending at or before this have fired or fire at the end of the batch.
            let closed = wm.saturating_sub(lateness);
            let latest = match kind {
                WindowKind::Session { gap } => {
                    let works = sessions.entry(key.to_vec()).or_insert_with(|| {
                        self.store
                            .sessions_of(key)
                            .iter()
                            .map(|s| Work {
                                span: *s,
                                originals: vec![*s],
                                values: vec![],
                            })
                            .collect()
                    });
                    // Sessions that are closed cannot grow (they may have fired).
                    let open: Vec<usize> = (0..works.len())
                        .filter(|&i| works[i].span.end > closed)
                        .collect();
                    let open_spans: Vec<Span> = open.iter().map(|&i| works[i].span).collect();
                    let (merged, absorbed) = merge_session(&open_spans, t, gap);
                    // A closed session the record would reach into: one
                    // about to fire (in this batch's store or work) or one
                    // that fired. Joining it would change a result that is
                    // final; a second session beside it would make two
                    // results for one session. So the record is late.
                    let reaches_closed = works
                        .iter()
                        .map(|w| w.span)
                        .chain(self.store.fired_of(key))
                        .find(|s| s.end <= closed && s.overlaps(&merged));
                    if merged.end <= closed {
                        Err(merged)
                    } else if let Some(c) = reaches_closed {
                        Err(c)
                    } else {
                        let mut w = Work {
                            span: merged,
                            originals: vec![],
                            values: vec![],
                        };
                        // Remove absorbed (highest index first) and fold them in, in time order.
                        let mut idx: Vec<usize> = absorbed.iter().map(|&a| open[a]).collect();
                        idx.sort_unstable_by(|a, b| b.cmp(a));
                        let mut parts: Vec<Work> =
                            idx.into_iter().map(|i| works.remove(i)).collect();
                        parts.sort_by_key(|p| p.span);
                        for p in parts {
                            w.originals.extend(p.originals);
                            w.values.extend(p.values);
                        }
                        w.values.push(ex.values.get(i).to_vec());
                        works.push(w);
                        Ok(())
                    }
                }
                _ => {
                    fixed_windows(kind, t, &mut spans);
                    let mut open = 0;
                    for s in spans.iter().filter(|s| s.end > closed) {
                        let next = members.len() as u32;
                        let g = *slots.entry((*s, key)).or_insert(next);
                        if g == next {
                            members.push(Vec::new());
                        }
                        members[g as usize].push(i as u32);
                        open += 1;
                    }
                    if open > 0 {
                        Ok(())
                    } else {
                        Err(spans[0])
                    }
                }
            };
            if let Err(w) = latest {
                late.push(Rejection::new(
                    ex.index[i] as usize,
                    "late",
                    format!(
                        "stage {}: event time {} is behind the watermark {} by more than allowed_lateness ({lateness}ms): window [{}, {}) is closed",
                        self.node,
                        output::rfc3339_ms(t),
                        output::rfc3339_ms(wm),
                        output::rfc3339_ms(w.start),
                        output::rfc3339_ms(w.end)
                    ),
                ));
            }
        }
        let mut updates = Vec::new();
        if !slots.is_empty() {
            // Hashed while grouping, sorted once for the call: a deterministic
            // order, the order windows fire in (end, key, start).
            let mut order: Vec<((Span, &[u8]), u32)> = slots.into_iter().collect();
            order.sort_unstable_by(|((a, ka), _), ((b, kb), _)| {
                (a.end, ka, a.start).cmp(&(b.end, kb, b.start))
            });
            let mut groups = GroupsBuilder::default();
            let mut keys = Vec::with_capacity(order.len());
            for ((span, key), g) in order {
                let k = WinKey::new(span, key.to_vec());
                let state = self.store.get(&k).and_then(|e| e.state.as_deref());
                groups.group(span.start, span.end, key, state);
                for &i in &members[g as usize] {
                    groups.value(ex.values.get(i as usize));
                }
                keys.push(k);
            }
            let (states, w) = self.plugin.accumulate(&groups.finish())?;
            writes.extend(w);
            updates = keys
                .into_iter()
                .zip(states.iter())
                .map(|(k, s)| (k, s.to_vec()))
                .collect();
        }
        let mut sessions: Vec<(Vec<u8>, Vec<Work>)> = sessions.into_iter().collect();
        sessions.sort_by(|a, b| a.0.cmp(&b.0));
        let rejected = ex
            .rejected
            .into_iter()
            .map(wire::from_wit_rejection)
            .collect();
        let part_max = (ex.index.len() > 0).then_some(part_max);
        Ok(Delta {
            rejected,
            late,
            updates,
            sessions,
            writes,
            partition,
            part_max,
        })
    }

    fn apply(&mut self, d: Delta, raw: &Batch) -> Result<(), Stop> {
        let late = d.late.len();
        let mut letters = DeadLetter::all(&self.node, raw, d.rejected);
        letters.extend(DeadLetter::all(&self.node, raw, d.late));
        self.stats.add_rejected(letters.len());
        metrics::late(&self.node, late);
        self.out.blocking_dead_letters(letters)?;
        let wrote = !d.writes.is_empty();
        d.writes.commit(&self.keyed);
        for (k, s) in d.updates {
            self.store.put(
                k,
                Entry {
                    state: Some(s),
                    values: vec![],
                },
                false,
            );
        }
        for (key, works) in d.sessions {
            for w in works {
                if w.values.is_empty() {
                    continue; // an untouched stored session
                }
                let mut entry = Entry::default();
                for o in &w.originals {
                    if let Some(e) = self.store.remove(&WinKey::new(*o, key.clone())) {
                        entry.values.extend(e.values);
                    }
                }
                entry.values.extend(w.values);
                self.store
                    .put(WinKey::new(w.span, key.clone()), entry, true);
            }
        }
        if let Some(m) = d.part_max {
            self.marks.delivered(&d.partition, m, Instant::now());
        }
        self.check_bound(wrote)
    }

    /// The `state_memory` bound: a clear error that stops the run (see
    /// ARCHITECTURE.md for why not a spill).
    fn check_bound(&mut self, keyed_changed: bool) -> Result<(), Stop> {
        if keyed_changed {
            self.keyed_bytes = snapshot::keyed_bytes(&self.keyed);
        }
        let used = (self.store.bytes() + self.keyed_bytes) as u64;
        if used > self.state_memory {
            return Err(Stop::Fatal(format!(
                "state of {} is {used} bytes ({} open windows), over its state_memory of {} bytes; raise \
                 [stages.{}] state_memory, or use shorter windows or fewer keys. The run stops without \
                 checkpointing past this point",
                self.node,
                self.store.len(),
                self.state_memory,
                self.name
            )));
        }
        Ok(())
    }
}

/// What the runtime hands over to start an aggregate stage.
pub struct Prep<'a> {
    pub name: String,
    pub plugin: AggregatePlugin,
    pub windowing: Windowing,
    pub state_memory: u64,
    pub keyed: StateMap,
    /// The stage's value in the checkpoint resumed from.
    pub saved: Option<&'a serde_json::Value>,
    pub inputs: usize,
    pub rx: mpsc::Receiver<Envelope>,
    pub out: Outputs,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub requests: mpsc::UnboundedSender<Request>,
    pub stats: Arc<NodeStats>,
}

/// Restore the stage from the checkpoint: keyed state first (so `init`
/// sees it), then a fresh `init`, then windows and watermarks, migrating
/// accumulators to the plugin's state-version. Any failure here stops the
/// start before anything is written.
pub fn spawn_prep(p: Prep<'_>) -> Result<AggregateNode, PluginError> {
    super::stage::restore(&p.keyed, snapshot::keyed(p.saved));
    let mut plugin = p.plugin;
    plugin.reinit()?;
    let mut node = AggregateNode {
        node: format!("stages.{}", p.name),
        name: p.name,
        plugin,
        windowing: p.windowing,
        state_memory: p.state_memory,
        inputs: p.inputs,
        rx: p.rx,
        out: p.out,
        acks: p.acks,
        requests: p.requests,
        stats: p.stats,
        keyed: p.keyed,
        store: Store::default(),
        marks: Watermarks::new(p.windowing.idle_timeout),
        keyed_bytes: 0,
        rt: tokio::runtime::Handle::current(),
    };
    snapshot::restore(&mut node, p.saved)?;
    Ok(node)
}
