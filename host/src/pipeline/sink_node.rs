//! A sink node: a tokio task that feeds batches to a `Sink`, prepares it at
//! aligned barriers, and commits an epoch only when the coordinator says the
//! checkpoint holding its token is durable.
//!
//! `write` and `prepare` are called once: a failure stops the run (the next
//! one recovers from the last checkpoint), because a half-done call cannot be
//! repeated safely. Only `commit`, idempotent by contract, is retried.
//!
//! A sink that offers detached writes (`Sink::write_detached`) gets its next
//! batch while earlier ones are still being written (`inflight`: at most a
//! few batches). Their outcomes are handled in batch order, as they complete
//! and in any case before `prepare` at a barrier and before the node ends: a
//! barrier (and so a checkpoint) never passes a write that has not
//! completed, and the refusals of the batches before a barrier reach the DLQ
//! ahead of that barrier, as with `write`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug_span, error, warn, Instrument};

use super::align::{Aligner, Event};
use super::edge::{Envelope, Outputs};
use super::inflight::{InFlight, Pending};
use super::msg::{Ack, Request};
use super::stats::NodeStats;
use crate::batch::{Batch, Rejection};
use crate::dead_letter::DeadLetter;
use crate::retry::RetryPolicy;
use crate::sink::{dlq, Sink, SinkError, Written};

/// "The checkpoint of `epoch` is durable: make its output visible."
#[derive(Debug, Clone)]
pub struct Commit {
    pub epoch: u64,
    pub token: serde_json::Value,
}

pub struct SinkNode {
    pub node: String,
    pub sink: Box<dyn Sink>,
    pub inputs: usize,
    pub rx: mpsc::Receiver<Envelope>,
    /// Only the DLQ edge is used: sinks have no downstream.
    pub out: Outputs,
    pub commits: mpsc::UnboundedReceiver<Commit>,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub requests: mpsc::UnboundedSender<Request>,
    pub stats: Arc<NodeStats>,
    pub retry: RetryPolicy,
}

impl SinkNode {
    pub async fn run(mut self) -> Result<(), SinkError> {
        let span = tracing::info_span!("sink", node = %self.node);
        async move {
            let mut aligner = Aligner::new(self.inputs);
            let mut events = Vec::new();
            let mut asked = false;
            let mut last_epoch: Option<u64> = None;
            let mut inflight = InFlight::default();
            loop {
                tokio::select! {
                    // Commits first: they only make already-durable output visible.
                    biased;
                    c = self.commits.recv() => {
                        let Some(c) = c else { return Ok(()) };
                        self.commit(&c).await?;
                        if last_epoch == Some(c.epoch) {
                            return Ok(());
                        }
                    }
                    // A detached write completed: its refusals go to the DLQ now.
                    done = inflight.next(&self.node), if !inflight.is_empty() => {
                        self.completed(done).await?;
                    }
                    env = self.rx.recv(), if last_epoch.is_none() => {
                        let Some(env) = env else { return self.drain(&mut inflight).await };
                        aligner.offer(env, &mut events);
                        for ev in events.drain(..) {
                            match ev {
                                Event::DeadLetters(letters) => {
                                    // Only the DLQ sink has DLQ edges coming in.
                                    if let Some(batch) = dlq::encode(&letters) {
                                        self.write(batch, &mut inflight).await?;
                                    }
                                }
                                Event::Data(batch, _) => {
                                    self.write(batch, &mut inflight).await?;
                                    if !asked {
                                        if let Some(reason) = self.sink.wants_checkpoint() {
                                            asked = true;
                                            let _ = self.requests.send(Request::Checkpoint { node: self.node.clone(), reason });
                                        }
                                    }
                                }
                                Event::Partitions(_) => {}
                                Event::Barrier(b) => {
                                    // The barrier covers every batch before it: their writes
                                    // complete (and their refusals reach the DLQ) first.
                                    self.drain(&mut inflight).await?;
                                    if b.last {
                                        self.sink.finishing();
                                    }
                                    // Once: a failed prepare may have taken the open output out of the
                                    // sink, and a retry would answer with a token that misses it.
                                    let token = match self.sink.prepare(b.epoch).await {
                                        Ok(t) => t,
                                        Err(e) => return Err(self.halt("prepare", e)),
                                    };
                                    asked = false;
                                    let _ = self.out.barrier(b).await;
                                    let _ = self.acks.send(Ack { node: self.node.clone(), epoch: b.epoch, state: Some(token) });
                                    if b.last {
                                        last_epoch = Some(b.epoch);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn write(&mut self, batch: Batch, inflight: &mut InFlight) -> Result<(), SinkError> {
        let n = batch.len();
        let span = debug_span!("batch", records = n, partition = %batch.origin.partition);
        self.stats.add_in(n);
        self.stats.batches.fetch_add(1, Relaxed);
        let started = Instant::now();
        let takes = self.sink.takes();
        // `batch` stays as it arrived: DLQ entries show records as they
        // arrived, never the host's conversion (invariant 5). `kept[i]` is the
        // index in `batch` of record `i` of the converted batch when the
        // conversion dropped records.
        let mut converted = None;
        let mut kept: Option<Vec<usize>> = None;
        if batch.format() != takes {
            match crate::convert::to_format_lenient(batch.clone(), takes) {
                Ok((c, refused)) => {
                    if !refused.is_empty() {
                        let mut dropped = vec![false; n];
                        refused.iter().for_each(|r| dropped[r.index] = true);
                        kept = Some((0..n).filter(|&i| !dropped[i]).collect());
                    }
                    self.refuse(&batch, refused).await?;
                    converted = Some(c);
                }
                Err(e) => {
                    let msg = format!("cannot convert the batch to {takes} for this sink: {e}");
                    let all = (0..n).map(|i| Rejection::new(i, "convert_error", msg.clone())).collect();
                    return self.refuse(&batch, all).await;
                }
            }
        }
        let target = converted.as_ref().unwrap_or(&batch);
        if target.is_empty() {
            return Ok(());
        }
        let written = target.len();
        if let Some(write) = span.in_scope(|| self.sink.write_detached(target)) {
            drop(converted);
            // Bounded: with the most batches in flight, the oldest completes first.
            if inflight.is_full() {
                let done = inflight.next(&self.node).await;
                self.completed(done).await?;
            }
            inflight.push(Pending { batch, kept, written }, Box::pin(write.instrument(span)));
            self.stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
            return Ok(());
        }
        // Once: a failed write may have appended part of the batch.
        let outcome = self.sink.write(target).instrument(span).await;
        self.stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        drop(converted);
        self.completed((Pending { batch, kept, written }, outcome)).await
    }

    /// Handles a write's outcome: counts, refusals to the DLQ (mapped back
    /// to the batch as it arrived), or a halt.
    async fn completed(&mut self, (p, outcome): (Pending, Result<Written, SinkError>)) -> Result<(), SinkError> {
        let written = match outcome {
            Ok(w) => w,
            Err(e) => return Err(self.halt("write", e)),
        };
        self.stats.add_out(written.accepted);
        let mut refused = Vec::with_capacity(written.refused.len());
        for r in written.refused {
            let index = match (&p.kept, r.index < p.written) {
                (_, false) => {
                    let e = SinkError::Io {
                        sink: self.node.clone(),
                        message: format!("refused record {} of a batch of {} (a bug in the sink)", r.index, p.written),
                        retryable: false,
                    };
                    return Err(self.halt("write", e));
                }
                (Some(k), true) => k[r.index],
                (None, true) => r.index,
            };
            refused.push(Rejection { index, ..r });
        }
        self.refuse(&p.batch, refused).await
    }

    /// Waits for every detached write and handles their outcomes in order.
    async fn drain(&mut self, inflight: &mut InFlight) -> Result<(), SinkError> {
        let started = Instant::now();
        while !inflight.is_empty() {
            let done = inflight.next(&self.node).await;
            self.completed(done).await?;
        }
        self.stats.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        Ok(())
    }

    /// A `write` or `prepare` failed: report it and stop (see `sink` docs: such
    /// calls are not retried).
    fn halt(&self, call: &'static str, e: SinkError) -> SinkError {
        let e = SinkError::Halted { call, cause: Box::new(e) };
        error!(error = %e, "sink {call} failed");
        let _ = self.requests.send(Request::Failed { node: self.node.clone(), error: e.to_string() });
        e
    }

    async fn refuse(&mut self, batch: &Batch, refused: Vec<Rejection>) -> Result<(), SinkError> {
        if refused.is_empty() {
            return Ok(());
        }
        self.stats.add_rejected(refused.len());
        if self.out.dlq.is_none() {
            // The DLQ itself refusing records would lose them: fail loudly instead.
            let first = &refused[0];
            return Err(SinkError::Io {
                sink: self.node.clone(),
                message: format!(
                    "the dead-letter queue could not take {} of its own entries (first: record {} of {}, {}: {}); they would be lost, so the run stops. Fix what makes the DLQ refuse them (its path: [dlq] path)",
                    refused.len(),
                    first.index,
                    batch.origin.source,
                    first.code,
                    first.message
                ),
                retryable: false,
            });
        }
        let letters = DeadLetter::all(&self.node, batch, refused);
        self.out.dead_letters(letters).await.map_err(|e| SinkError::Io {
            sink: self.node.clone(),
            message: format!("cannot send refused records to the DLQ: {e} (the DLQ failed first; its error says why)"),
            retryable: false,
        })
    }

    async fn commit(&mut self, c: &Commit) -> Result<(), SinkError> {
        let token = c.token.clone();
        self.with_retry("commit", |s| {
            let t = token.clone();
            Box::pin(async move { s.sink.commit(&t).await })
        })
        .await?;
        self.stats.outputs.store(self.sink.committed_outputs(), Relaxed);
        self.stats.default_partition.store(self.sink.default_partition_records(), Relaxed);
        let open = self.sink.open_files();
        self.stats.open_files_peak.store(open.peak, Relaxed);
        self.stats.files_finished_early.store(open.finished_early, Relaxed);
        Ok(())
    }

    /// Retries `f` on retryable errors; only for idempotent calls (`commit`).
    async fn with_retry<T>(
        &mut self,
        what: &str,
        mut f: impl for<'a> FnMut(&'a mut Self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, SinkError>> + Send + 'a>>,
    ) -> Result<T, SinkError> {
        let mut attempt = 0u32;
        let started = Instant::now();
        loop {
            match f(self).await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => match self.retry.next_delay(attempt, started.elapsed()) {
                    Some(d) => {
                        warn!(error = %e, attempt, delay_ms = d.as_millis() as u64, "sink {what} failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(d).await;
                    }
                    None => {
                        error!(error = %e, "sink {what} failed; giving up");
                        let _ = self.requests.send(Request::Failed { node: self.node.clone(), error: e.to_string() });
                        return Err(e);
                    }
                },
                Err(e) => {
                    error!(error = %e, "sink {what} failed");
                    let _ = self.requests.send(Request::Failed { node: self.node.clone(), error: e.to_string() });
                    return Err(e);
                }
            }
        }
    }
}
