//! Edges of the pipeline graph: bounded channels (the backpressure) carrying
//! `Msg`s tagged with the input slot they arrive on, so a node with several
//! inputs can align barriers.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::batch::{Batch, BatchData, JsonRecords, Origin, RecordMeta};
use crate::pipeline::msg::{Barrier, Msg};

/// A message on a node's input channel; `input` is the slot of the upstream
/// node among this node's inputs.
#[derive(Debug)]
pub struct Envelope {
    pub input: usize,
    pub msg: Msg,
}

/// One downstream connection.
#[derive(Debug, Clone)]
pub struct Edge {
    pub to: String,
    pub input: usize,
    pub tx: mpsc::Sender<Envelope>,
}

impl Edge {
    pub async fn send(&self, msg: Msg) -> Result<(), Closed> {
        self.tx.send(Envelope { input: self.input, msg }).await.map_err(|_| Closed(self.to.clone()))
    }
    pub fn blocking_send(&self, msg: Msg) -> Result<(), Closed> {
        self.tx.blocking_send(Envelope { input: self.input, msg }).map_err(|_| Closed(self.to.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("downstream node {0} stopped")]
pub struct Closed(pub String);

/// A node's outputs: its downstream edges and its edge to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub edges: Vec<Edge>,
    pub dlq: Option<Edge>,
}

impl Outputs {
    /// Send a batch to every downstream node (fan-out clones; Arrow clones are cheap).
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        let Some((last, rest)) = self.edges.split_last() else { return Ok(()) };
        for e in rest {
            e.send(Msg::Data(batch.clone())).await?;
        }
        last.send(Msg::Data(batch)).await
    }
    pub fn blocking_send(&self, batch: Batch) -> Result<(), Closed> {
        let Some((last, rest)) = self.edges.split_last() else { return Ok(()) };
        for e in rest {
            e.blocking_send(Msg::Data(batch.clone()))?;
        }
        last.blocking_send(Msg::Data(batch))
    }
    /// Forward a barrier downstream and to the DLQ.
    pub async fn barrier(&self, b: Barrier) -> Result<(), Closed> {
        for e in self.edges.iter().chain(self.dlq.iter()) {
            e.send(Msg::Barrier(b)).await?;
        }
        Ok(())
    }
    pub fn blocking_barrier(&self, b: Barrier) -> Result<(), Closed> {
        for e in self.edges.iter().chain(self.dlq.iter()) {
            e.blocking_send(Msg::Barrier(b))?;
        }
        Ok(())
    }
    /// Dead-letter entries (already-built envelopes, see `sink::dlq::Entry`).
    pub async fn dead_letters(&self, origin: &Arc<Origin>, entries: Vec<(RecordMeta, Vec<u8>)>) -> Result<(), Closed> {
        if let Some(batch) = dlq_batch(origin, entries) {
            if let Some(d) = &self.dlq {
                d.send(Msg::Data(batch)).await?;
            }
        }
        Ok(())
    }
    pub fn blocking_dead_letters(&self, origin: &Arc<Origin>, entries: Vec<(RecordMeta, Vec<u8>)>) -> Result<(), Closed> {
        if let Some(batch) = dlq_batch(origin, entries) {
            if let Some(d) = &self.dlq {
                d.blocking_send(Msg::Data(batch))?;
            }
        }
        Ok(())
    }
}

fn dlq_batch(origin: &Arc<Origin>, entries: Vec<(RecordMeta, Vec<u8>)>) -> Option<Batch> {
    if entries.is_empty() {
        return None;
    }
    let mut json = JsonRecords::with_capacity(entries.len(), entries.iter().map(|e| e.1.len()).sum());
    let mut meta = Vec::with_capacity(entries.len());
    for (m, doc) in entries {
        json.push(&doc);
        meta.push(m);
    }
    Some(Batch { origin: origin.clone(), meta, data: BatchData::Json(json) })
}
