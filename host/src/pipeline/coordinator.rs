//! The checkpoint coordinator: injects barriers at the sources, collects every
//! node's answer, writes the checkpoint, then tells sinks to commit.
//!
//! Invariant: a checkpoint is written only when every node acknowledged the
//! same epoch, so the positions it records never run ahead of output that is
//! durable in a sink or the DLQ; sinks make output visible only after that
//! write (two-phase commit, see `sink`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::msg::{Ack, Barrier, Request};
use super::sink_node::Commit;
use super::stats::Progress;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, FORMAT_VERSION};

pub struct Coordinator {
    pub pipeline: String,
    pub store: Box<dyn CheckpointStore>,
    /// Epoch of the checkpoint we resumed from (0 = none).
    pub epoch: u64,
    pub interval: Duration,
    pub sources: Vec<(String, mpsc::UnboundedSender<Barrier>)>,
    pub sinks: Vec<(String, mpsc::UnboundedSender<Commit>)>,
    /// Every node that must acknowledge a barrier.
    pub expected: BTreeSet<String>,
    pub acks: mpsc::UnboundedReceiver<Ack>,
    pub requests: mpsc::UnboundedReceiver<Request>,
    /// Flips to true on SIGINT/SIGTERM.
    pub shutdown: watch::Receiver<bool>,
    /// Where the last checkpoint's epoch and timing are published (admin endpoint).
    pub progress: Arc<Progress>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{node} failed: {error}")]
    Node { node: String, error: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the pipeline stopped before its last checkpoint: {0}")]
    Incomplete(String),
    /// The last checkpoint is durable but a node failed after it (a sink could
    /// not commit it): the output is not complete until the next run, whose
    /// recovery re-runs those commits.
    #[error("the last checkpoint (epoch {epoch}) was written, but then {error}. Its output is not all visible yet: run the pipeline again, it completes that checkpoint's commits before reading anything")]
    AfterCheckpoint { epoch: u64, error: String },
}

struct InFlight {
    epoch: u64,
    started: Instant,
    last: bool,
    acks: BTreeMap<String, Option<serde_json::Value>>,
}

impl Coordinator {
    /// Runs until the last checkpoint is committed; returns its epoch.
    pub async fn run(mut self) -> Result<u64, RunError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut in_flight: Option<InFlight> = None;
        let mut exhausted = BTreeSet::new();
        let mut finishing = false;
        let mut early = false;
        loop {
            // Start the next checkpoint when none is in flight and one is due.
            if in_flight.is_none() && (finishing || early) {
                in_flight = Some(self.trigger(finishing, &exhausted));
                early = false;
            }
            tokio::select! {
                _ = tick.tick(), if in_flight.is_none() => early = true,
                // A lost S3 lease: another process owns the store now, and
                // nothing more of this one may become visible.
                e = self.store.lost() => return Err(RunError::Checkpoint(e)),
                changed = self.shutdown.changed(), if !finishing => {
                    if changed.is_ok() && *self.shutdown.borrow() {
                        info!("shutting down: draining in-flight batches, then a last checkpoint");
                        finishing = true;
                    }
                }
                req = self.requests.recv() => match req {
                    Some(Request::Checkpoint { node, reason }) => {
                        debug!(%node, %reason, "early checkpoint requested");
                        early = true;
                    }
                    Some(Request::Exhausted { node }) => {
                        exhausted.insert(node);
                        if self.sources.iter().all(|(n, _)| exhausted.contains(n)) {
                            info!("all sources exhausted: last checkpoint");
                            finishing = true;
                        }
                    }
                    Some(Request::Failed { node, error }) => return Err(RunError::Node { node, error }),
                    None => return Err(self.stopped().await),
                },
                ack = self.acks.recv() => {
                    let Some(ack) = ack else { return Err(self.stopped().await) };
                    let Some(f) = in_flight.as_mut() else {
                        warn!(node = %ack.node, epoch = ack.epoch, "acknowledgement with no checkpoint in flight");
                        continue;
                    };
                    if ack.epoch != f.epoch {
                        warn!(node = %ack.node, epoch = ack.epoch, expected = f.epoch, "stale acknowledgement");
                        continue;
                    }
                    f.acks.insert(ack.node, ack.state);
                    if self.expected.iter().all(|n| f.acks.contains_key(n)) {
                        let done = in_flight.take().expect("in flight");
                        let last = done.last;
                        self.complete(done).await?;
                        if last {
                            return Ok(self.epoch);
                        }
                    }
                }
            }
        }
    }

    /// Every node is gone. A failing node reports on `requests` before its
    /// ack sender drops, so prefer its error: it says what went wrong.
    /// The failure report may still be on its way (a source's task reports
    /// after it ended), so wait for it briefly.
    async fn stopped(&mut self) -> RunError {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(req)) = tokio::time::timeout_at(deadline, self.requests.recv()).await {
            if let Request::Failed { node, error } = req {
                return RunError::Node { node, error };
            }
        }
        RunError::Incomplete("every node stopped".into())
    }

    fn trigger(&mut self, last: bool, exhausted: &BTreeSet<String>) -> InFlight {
        let epoch = self.epoch + 1;
        debug!(epoch, last, "checkpoint barrier");
        // Drained only when every source is exhausted: a shutdown's last
        // barrier must leave windows open (the next run continues them).
        let drained = last && self.sources.iter().all(|(n, _)| exhausted.contains(n));
        for (node, tx) in &self.sources {
            if tx.send(Barrier { epoch, last, drained }).is_err() {
                debug!(%node, "source already stopped");
            }
        }
        InFlight { epoch, started: Instant::now(), last, acks: BTreeMap::new() }
    }

    async fn complete(&mut self, f: InFlight) -> Result<(), RunError> {
        let nodes: BTreeMap<String, serde_json::Value> =
            f.acks.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
        let cp = Checkpoint {
            version: FORMAT_VERSION,
            pipeline: self.pipeline.clone(),
            epoch: f.epoch,
            created: chrono::Utc::now().to_rfc3339(),
            nodes,
        };
        self.store.save(&cp).await?;
        self.epoch = f.epoch;
        self.progress.checkpointed(f.epoch, f.started.elapsed());
        info!(epoch = f.epoch, last = f.last, "checkpoint written");
        for (node, tx) in &self.sinks {
            if let Some(token) = cp.nodes.get(node) {
                let _ = tx.send(Commit { epoch: f.epoch, token: token.clone() });
            }
        }
        Ok(())
    }
}
