//! Edges of the pipeline graph: bounded channels (the backpressure) carrying
//! `Msg`s tagged with the input slot they arrive on, so a node with several
//! inputs can align barriers.

use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::dead_letter::DeadLetter;
use crate::pipeline::msg::{Barrier, Msg, Partitions};

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
    /// Partitions opened or closed, to every downstream node (not the DLQ).
    pub async fn partitions(&self, p: Partitions) -> Result<(), Closed> {
        for e in &self.edges {
            e.send(Msg::Partitions(p.clone())).await?;
        }
        Ok(())
    }
    pub fn blocking_partitions(&self, p: Partitions) -> Result<(), Closed> {
        for e in &self.edges {
            e.blocking_send(Msg::Partitions(p.clone()))?;
        }
        Ok(())
    }
    /// Records given up on, to the DLQ (dropped when the node has no DLQ
    /// edge: only the DLQ sink itself, which fails instead).
    pub async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), Closed> {
        match &self.dlq {
            Some(d) if !letters.is_empty() => d.send(Msg::DeadLetters(letters)).await,
            _ => Ok(()),
        }
    }
    pub fn blocking_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), Closed> {
        match &self.dlq {
            Some(d) if !letters.is_empty() => d.blocking_send(Msg::DeadLetters(letters)),
            _ => Ok(()),
        }
    }
}
