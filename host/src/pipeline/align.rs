//! Barrier alignment for nodes with several inputs (Chandy–Lamport as in
//! Flink): once an input delivered the barrier of epoch N, its later messages
//! are held until every input delivered it. Without this, a sink with two
//! inputs could commit records of epoch N+1 from one input in epoch N while
//! the source positions say they are not processed yet — a duplicate on replay.

use std::collections::VecDeque;

use super::edge::Envelope;
use super::msg::{Barrier, Msg, Partitions};
use crate::batch::Batch;
use crate::dead_letter::DeadLetter;

#[derive(Debug)]
pub enum Event {
    Data(Batch, usize),
    /// Aligned like data: dead letters belong to the epoch they arrive in.
    DeadLetters(Vec<DeadLetter>),
    /// Every input delivered this barrier.
    Barrier(Barrier),
    /// Aligned like data: it stays in order with the records around it.
    Partitions(Partitions),
}

#[derive(Debug)]
pub struct Aligner {
    /// Per input: the barrier it delivered and we are waiting on the others for.
    arrived: Vec<Option<Barrier>>,
    held: VecDeque<Envelope>,
}

impl Aligner {
    pub fn new(inputs: usize) -> Self {
        Self { arrived: vec![None; inputs.max(1)], held: VecDeque::new() }
    }

    /// Feed one message; returns what the node should act on, in order.
    pub fn offer(&mut self, env: Envelope, out: &mut Vec<Event>) {
        if self.arrived[env.input].is_some() {
            self.held.push_back(env);
            return;
        }
        match env.msg {
            Msg::Data(b) => out.push(Event::Data(b, env.input)),
            Msg::DeadLetters(d) => out.push(Event::DeadLetters(d)),
            Msg::Partitions(p) => out.push(Event::Partitions(p)),
            Msg::Barrier(b) => {
                self.arrived[env.input] = Some(b);
                if self.arrived.iter().all(Option::is_some) {
                    // Inputs may disagree on `last` only if a pipeline mixes bounded and
                    // unbounded sources; the barrier is last only when it is last everywhere.
                    let last = self.arrived.iter().all(|a| a.is_some_and(|a| a.last));
                    let drained = self.arrived.iter().all(|a| a.is_some_and(|a| a.drained));
                    let epoch = b.epoch;
                    self.arrived.iter_mut().for_each(|a| *a = None);
                    out.push(Event::Barrier(Barrier { epoch, last, drained }));
                    let held = std::mem::take(&mut self.held);
                    for h in held {
                        self.offer(h, out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchData, JsonRecords, Origin};
    use std::sync::Arc;

    fn data(input: usize, tag: &str) -> Envelope {
        let origin = Arc::new(Origin { source: tag.into(), partition: "p".into() });
        Envelope { input, msg: Msg::Data(Batch { origin, meta: vec![], data: BatchData::Json(JsonRecords::default()) }) }
    }
    fn barrier(input: usize, epoch: u64) -> Envelope {
        Envelope { input, msg: Msg::Barrier(Barrier { epoch, last: false, drained: false }) }
    }
    fn names(ev: &[Event]) -> Vec<String> {
        ev.iter()
            .map(|e| match e {
                Event::Data(b, _) => b.origin.source.to_string(),
                Event::DeadLetters(d) => format!("D{}", d.len()),
                Event::Barrier(b) => format!("B{}", b.epoch),
                Event::Partitions(p) => format!("P{}", p.opened.len()),
            })
            .collect()
    }

    #[test]
    fn holds_post_barrier_data_until_aligned() {
        let mut a = Aligner::new(2);
        let mut out = Vec::new();
        for e in [data(0, "a1"), barrier(0, 1), data(0, "a2"), data(1, "b1"), barrier(1, 1), data(1, "b2")] {
            a.offer(e, &mut out);
        }
        assert_eq!(names(&out), ["a1", "b1", "B1", "a2", "b2"]);
    }

    #[test]
    fn held_barrier_of_next_epoch_is_replayed() {
        let mut a = Aligner::new(2);
        let mut out = Vec::new();
        for e in [barrier(0, 1), barrier(0, 2), barrier(1, 1), barrier(1, 2)] {
            a.offer(e, &mut out);
        }
        assert_eq!(names(&out), ["B1", "B2"]);
    }
}
