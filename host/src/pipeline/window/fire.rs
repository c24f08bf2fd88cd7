//! Firing: closed windows become output records (`finish`), in (end, key,
//! start) order so the stage's keyed state (which `finish` may update)
//! evolves the same way on every replay. Early firing (`emit_every`) emits
//! open windows' current results under the ids their final results will
//! have; its `finish` calls' state writes are dropped, because an early
//! result is a preview and must not count twice in state.

use std::sync::Arc;

use tracing::warn;

use super::output;
use super::store::{Entry, WinKey};
use super::{AggregateNode, Stop};
use crate::batch::{Batch, BatchData, JsonRecords, Origin, RecordMeta, Rejection};
use crate::config::window::WindowKind;
use crate::dead_letter::DeadLetter;
use crate::plugin::bindings::columns::{Blobs, Closed, Groups};
use crate::plugin::columns::GroupsBuilder;
use crate::plugin::PluginError;

impl AggregateNode {
    /// Fire every window with `end <= up_to`.
    pub(crate) fn fire(&mut self, up_to: i64) -> Result<(), Stop> {
        let fired = self.store.take_through(up_to);
        if let WindowKind::Session { gap } = self.windowing.kind {
            // Even when nothing fired now: what fired before may be forgotten.
            self.store.remember_fired(fired.iter().map(|(k, _)| k.clone()), gap, up_to);
        }
        if fired.is_empty() {
            return Ok(());
        }
        let _span =
            tracing::debug_span!("fire", stage = %self.node, windows = fired.len()).entered();
        let mut letters = Vec::new();
        let fired = self.settle(fired, &mut letters);
        let (docs, failed) = self.finish_all(&fired, true);
        for (k, e) in failed {
            letters.push(self.window_letter(&k, e.code(), &e.to_string()));
        }
        self.send(docs, letters)
    }

    /// `emit_every`: every open window's current result, state writes dropped.
    pub(super) fn emit_early(&mut self) -> Result<(), Stop> {
        let open: Vec<(WinKey, Entry)> = self
            .store
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut letters = Vec::new();
        let settled = self.settle(open, &mut letters);
        let (docs, failed) = self.finish_all(&settled, false);
        for (_, e) in failed {
            // The final firing will try again and dead-letter it if it still fails.
            warn!(error = %e, "early result failed");
        }
        self.send(docs, Vec::new())
    }

    /// Every window's accumulator: session windows' pending values are
    /// accumulated now, in one call for all of them (retried once, then one
    /// call per window so a failing window costs only itself).
    fn settle(
        &mut self,
        windows: Vec<(WinKey, Entry)>,
        letters: &mut Vec<DeadLetter>,
    ) -> Vec<(WinKey, Vec<u8>)> {
        let (pending, ready): (Vec<_>, Vec<_>) =
            windows.into_iter().partition(|(_, e)| !e.values.is_empty());
        let mut out: Vec<(WinKey, Vec<u8>)> = ready
            .into_iter()
            .filter_map(|(k, e)| e.state.map(|s| (k, s)))
            .collect();
        if !pending.is_empty() {
            let groups = groups_of(&pending);
            let all = self
                .plugin
                .accumulate(&groups)
                .or_else(|_| self.plugin.accumulate(&groups));
            match all {
                Ok((states, writes)) => {
                    writes.commit(&self.keyed);
                    let states = states.iter().map(<[u8]>::to_vec);
                    out.extend(pending.into_iter().map(|(k, _)| k).zip(states));
                }
                Err(_) => {
                    for w in pending {
                        let one = groups_of(std::slice::from_ref(&w));
                        match self.plugin.accumulate(&one) {
                            Ok((s, writes)) => {
                                writes.commit(&self.keyed);
                                out.push((w.0, s.get(0).to_vec()));
                            }
                            Err(e) => {
                                letters.push(self.window_letter(&w.0, e.code(), &e.to_string()))
                            }
                        }
                    }
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }

    /// The windows' results with their output ids, decorated (one `finish` call for all, retried
    /// once on a fresh instance, then one call per window so a failing
    /// window costs only itself), and the windows that failed. State writes
    /// are committed when `commit` (final results, not previews).
    fn finish_all(
        &mut self,
        windows: &[(WinKey, Vec<u8>)],
        commit: bool,
    ) -> (Vec<(String, Vec<u8>)>, Vec<(WinKey, PluginError)>) {
        if windows.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let closed = closed_of(windows);
        let all = self.plugin.finish(&closed).or_else(|e| {
            warn!(error = %e, windows = windows.len(), "finish failed; retrying on a fresh instance");
            self.plugin.finish(&closed)
        });
        let (mut docs, mut failed) = (Vec::new(), Vec::new());
        match all {
            Ok((results, writes)) => {
                if commit {
                    writes.commit(&self.keyed);
                }
                for (i, doc) in results {
                    let k = &windows[i].0;
                    let id = output::id(&self.name, k.span(), &k.key);
                    match output::decorate(&doc, &id, k.span()) {
                        Ok(doc) => docs.push((id, doc)),
                        Err(m) => failed.push((k.clone(), self.plugin.contract(m))),
                    }
                }
            }
            Err(e) if windows.len() == 1 => failed.push((windows[0].0.clone(), e)),
            Err(_) => {
                for w in windows {
                    let (d, f) = self.finish_all(std::slice::from_ref(w), commit);
                    docs.extend(d);
                    failed.extend(f);
                }
            }
        }
        (docs, failed)
    }

    /// A dead letter for a window whose result could not be produced.
    fn window_letter(&self, k: &WinKey, code: &str, message: &str) -> DeadLetter {
        let meta = RecordMeta {
            seq: output::id(&self.name, k.span(), &k.key).into(),
            ..Default::default()
        };
        DeadLetter::unparsed(
            &self.node,
            &self.origin(),
            meta,
            output::describe(&self.name, k.span(), &k.key),
            code,
            message,
        )
    }

    fn origin(&self) -> Arc<Origin> {
        Arc::new(Origin {
            source: self.node.as_str().into(),
            partition: "windows".into(),
        })
    }

    /// Results (output id, document) downstream, dead letters to the DLQ.
    fn send(&mut self, docs: Vec<(String, Vec<u8>)>, letters: Vec<DeadLetter>) -> Result<(), Stop> {
        self.stats.add_rejected(letters.len());
        self.out.blocking_dead_letters(letters)?;
        if docs.is_empty() {
            return Ok(());
        }
        let mut j = JsonRecords::with_capacity(docs.len(), docs.iter().map(|d| d.1.len()).sum());
        let mut meta = Vec::with_capacity(docs.len());
        for (id, d) in &docs {
            j.push(d);
            meta.push(RecordMeta {
                seq: id.as_str().into(),
                ..Default::default()
            });
        }
        self.stats.add_out(docs.len());
        self.out.blocking_send(Batch {
            origin: self.origin(),
            meta,
            data: BatchData::Json(j),
        })?;
        Ok(())
    }

    /// Every record of `batch` to the DLQ with the reason.
    pub(super) fn quarantine(
        &mut self,
        batch: &Batch,
        code: &str,
        message: &str,
    ) -> Result<(), crate::pipeline::edge::Closed> {
        let letters = DeadLetter::all(
            &self.node,
            batch,
            (0..batch.len()).map(|i| Rejection::new(i, code, message)),
        );
        self.stats.add_rejected(batch.len());
        self.out.blocking_dead_letters(letters)
    }
}

/// Windows to finish, as the columns of one `finish` call.
fn closed_of(windows: &[(WinKey, Vec<u8>)]) -> Closed {
    let bytes = windows.iter().map(|(k, s)| k.key.len() + s.len()).sum();
    let mut c = Closed {
        window_start_ms: Vec::with_capacity(windows.len()),
        window_end_ms: Vec::with_capacity(windows.len()),
        keys: Blobs::with_capacity(windows.len(), bytes),
        states: Blobs::with_capacity(windows.len(), bytes),
    };
    for (k, state) in windows {
        c.window_start_ms.push(k.start);
        c.window_end_ms.push(k.end);
        c.keys.push(&k.key);
        c.states.push(state);
    }
    c
}

/// Session windows at firing: each window's state and pending values as
/// the groups of one `accumulate` call.
fn groups_of(windows: &[(WinKey, Entry)]) -> Groups {
    let mut g = GroupsBuilder::default();
    for (k, e) in windows {
        g.group(k.start, k.end, &k.key, e.state.as_deref());
        for v in &e.values {
            g.value(v);
        }
    }
    g.finish()
}
