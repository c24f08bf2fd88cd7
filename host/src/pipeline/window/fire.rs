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
use crate::dead_letter::DeadLetter;
use crate::plugin::bindings::types;
use crate::plugin::PluginError;

impl AggregateNode {
    /// Fire every window with `end <= up_to`.
    pub(crate) fn fire(&mut self, up_to: i64) -> Result<(), Stop> {
        let fired = self.store.take_through(up_to);
        if fired.is_empty() {
            return Ok(());
        }
        let _span =
            tracing::debug_span!("fire", stage = %self.node, windows = fired.len()).entered();
        let mut letters = Vec::new();
        let fired = self.settle(fired, &mut letters);
        let mut docs = Vec::new();
        for (k, state) in fired {
            match self.finish_one(&k, &state, true) {
                Ok(Some(doc)) => docs.push((k, doc)),
                Ok(None) => {}
                Err(e) => letters.push(self.window_letter(&k, e.code(), &e.to_string())),
            }
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
        let mut docs = Vec::new();
        for (k, state) in settled {
            match self.finish_one(&k, &state, false) {
                Ok(Some(doc)) => docs.push((k, doc)),
                Ok(None) => {}
                // The final firing will try again and dead-letter it if it still fails.
                Err(e) => warn!(error = %e, "early result failed"),
            }
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
            let groups: Vec<types::Group> = pending
                .iter()
                .map(|(k, e)| types::Group {
                    window: types::Window {
                        start_ms: k.start,
                        end_ms: k.end,
                    },
                    key: k.key.clone(),
                    state: e.state.clone(),
                    values: e.values.clone(),
                })
                .collect();
            let all = self
                .plugin
                .accumulate(&groups)
                .or_else(|_| self.plugin.accumulate(&groups));
            match all {
                Ok((states, writes)) => {
                    writes.commit(&self.keyed);
                    out.extend(pending.into_iter().map(|(k, _)| k).zip(states));
                }
                Err(_) => {
                    for ((k, _), g) in pending.into_iter().zip(groups) {
                        match self.plugin.accumulate(std::slice::from_ref(&g)) {
                            Ok((mut s, writes)) => {
                                writes.commit(&self.keyed);
                                out.push((k, s.remove(0)));
                            }
                            Err(e) => {
                                letters.push(self.window_letter(&k, e.code(), &e.to_string()))
                            }
                        }
                    }
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }

    /// One `finish` (retried once on a fresh instance), decorated; its state
    /// writes committed when `commit` and the result is usable.
    fn finish_one(
        &mut self,
        k: &WinKey,
        state: &[u8],
        commit: bool,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let window = types::Window {
            start_ms: k.start,
            end_ms: k.end,
        };
        let (doc, writes) = match self.plugin.finish(window, &k.key, state) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "finish failed; retrying on a fresh instance");
                self.plugin.finish(window, &k.key, state)?
            }
        };
        let Some(doc) = doc else {
            if commit {
                writes.commit(&self.keyed);
            }
            return Ok(None);
        };
        let doc = output::decorate(&doc, &self.name, k.span(), &k.key)
            .map_err(|m| self.plugin.contract(m))?;
        if commit {
            writes.commit(&self.keyed);
        }
        Ok(Some(doc))
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

    fn send(&mut self, docs: Vec<(WinKey, Vec<u8>)>, letters: Vec<DeadLetter>) -> Result<(), Stop> {
        self.stats.add_rejected(letters.len());
        self.out.blocking_dead_letters(letters)?;
        if docs.is_empty() {
            return Ok(());
        }
        let mut j = JsonRecords::with_capacity(docs.len(), docs.iter().map(|d| d.1.len()).sum());
        let mut meta = Vec::with_capacity(docs.len());
        for (k, d) in &docs {
            j.push(d);
            meta.push(RecordMeta {
                seq: output::id(&self.name, k.span(), &k.key).into(),
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
