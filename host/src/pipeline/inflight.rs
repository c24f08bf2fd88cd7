//! The detached writes a sink node has in flight (`Sink::write_detached`):
//! each runs as its own task, and the node takes their outcomes back in
//! batch order, with what it needs to handle them (the batch as it arrived,
//! for the DLQ, and the conversion's index mapping).
//!
//! At most `MAX_IN_FLIGHT` batches: enough that the sink always has the
//! next batch's requests queued when one batch's last request ends, few
//! enough that memory stays bounded when the service stalls (the node stops
//! reading its input, so backpressure reaches the source).

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use crate::batch::Batch;
use crate::sink::{Detached, SinkError, Written};

/// Batches a sink node has in flight at most. Two suffice to keep a
/// service busy (one whose requests run, one whose requests queue behind
/// them); each is a whole batch held in memory.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// A batch whose write runs detached.
pub(crate) struct Pending {
    /// As it arrived (DLQ entries show records as they arrived).
    pub batch: Batch,
    /// `kept[i]`: the index in `batch` of record `i` of what was written,
    /// when the format conversion dropped records.
    pub kept: Option<Vec<usize>>,
    /// Records in what was written (refusal indexes are below it).
    pub written: usize,
}

#[derive(Default)]
pub(crate) struct InFlight {
    queue: VecDeque<(Pending, JoinHandle<Result<Written, SinkError>>)>,
}

impl InFlight {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= MAX_IN_FLIGHT
    }

    /// Starts `write` as a task of the current runtime.
    pub fn push(&mut self, pending: Pending, write: Detached) {
        self.queue.push_back((pending, tokio::spawn(write)));
    }

    /// The oldest write's outcome, once it completed; pending forever when
    /// nothing is in flight. Cancel-safe: the entry leaves the queue only in
    /// the poll that returns it.
    pub async fn next(&mut self, node: &str) -> (Pending, Result<Written, SinkError>) {
        let Some((_, task)) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        let outcome = task.await;
        let (pending, _) = self.queue.pop_front().expect("the front was there");
        let outcome = outcome.unwrap_or_else(|e| {
            Err(SinkError::Io {
                sink: node.into(),
                message: format!("the write task ended without an outcome: {e}"),
                retryable: false,
            })
        });
        (pending, outcome)
    }
}

impl Drop for InFlight {
    /// A node that stops (a failed write, shutdown) leaves no write running
    /// behind it.
    fn drop(&mut self) {
        for (_, task) in &self.queue {
            task.abort();
        }
    }
}
