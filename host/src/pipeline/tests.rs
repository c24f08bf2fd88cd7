//! Runtime tests with a stand-in sink: barrier alignment over several
//! inputs, failing sink calls (not retried, the run stops), commit retries,
//! DLQ entries after a partial format conversion, detached writes drained
//! before a barrier, and the exit path after the last checkpoint.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::coordinator::Coordinator;
use super::edge::{Edge, Envelope, Outputs};
use super::msg::{Ack, Barrier, Msg, Request};
use super::sink_node::{Commit, SinkNode};
use super::stats::{NodeStats, Progress};
use crate::batch::{Batch, BatchData, Format};
use crate::retry::RetryPolicy;
use crate::sink::{Detached, Sink, SinkError, Written};
use crate::batch::Rejection;

/// What the stand-in sink does; `log` records every call in order.
#[derive(Default)]
struct StandIn {
    log: Arc<Mutex<Vec<String>>>,
    arrow: bool,
    /// The first this many calls fail with a retryable error.
    write_failures: u32,
    prepare_failures: u32,
    commit_failures: u32,
    commit_retryable: bool,
    /// Indexes refused in every batch written.
    refuse: Vec<usize>,
    /// Record tags written since the last prepare: the token.
    pending: Vec<String>,
}

fn io(msg: &str, retryable: bool) -> SinkError {
    SinkError::Io { sink: "standin".into(), message: msg.into(), retryable }
}

fn tags(batch: &Batch) -> Vec<String> {
    match &batch.data {
        BatchData::Json(j) => j.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect(),
        BatchData::Arrow(b) => (0..b.num_rows()).map(|i| format!("row{i}")).collect(),
    }
}

#[async_trait]
impl Sink for StandIn {
    fn takes(&self) -> Format {
        if self.arrow {
            Format::Arrow
        } else {
            Format::Json
        }
    }
    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        let t = tags(batch);
        self.log.lock().unwrap().push(format!("write {}", t.join(" ")));
        if self.write_failures > 0 {
            self.write_failures -= 1;
            // Half done: part of the batch went out before the error.
            self.pending.push(t[0].clone());
            return Err(io("disk hiccup", true));
        }
        self.pending.extend(t);
        let refused: Vec<Rejection> =
            self.refuse.iter().map(|&index| Rejection { index, code: "schema_mismatch".into(), message: "does not fit".into() }).collect();
        Ok(Written { accepted: batch.len() - refused.len(), refused })
    }
    async fn prepare(&mut self, epoch: u64) -> Result<Value, SinkError> {
        self.log.lock().unwrap().push(format!("prepare {epoch}"));
        // Like a sink that takes its open files out of its state first.
        let staged = std::mem::take(&mut self.pending);
        if self.prepare_failures > 0 {
            self.prepare_failures -= 1;
            return Err(io("ENOSPC", true));
        }
        Ok(json!(staged))
    }
    async fn commit(&mut self, token: &Value) -> Result<(), SinkError> {
        self.log.lock().unwrap().push(format!("commit {token}"));
        if self.commit_failures > 0 {
            self.commit_failures -= 1;
            return Err(io("rename failed", self.commit_retryable));
        }
        Ok(())
    }
    async fn recover(&mut self, _: Option<&Value>) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink node on `inputs` inputs, and the ends of its channels.
struct Harness {
    inputs: Vec<mpsc::Sender<Envelope>>,
    dlq: mpsc::Receiver<Envelope>,
    acks: mpsc::UnboundedReceiver<Ack>,
    requests: mpsc::UnboundedReceiver<Request>,
    commits: mpsc::UnboundedSender<Commit>,
    node: tokio::task::JoinHandle<Result<(), SinkError>>,
}

fn node(sink: impl Sink + 'static, inputs: usize) -> Harness {
    let (tx, rx) = mpsc::channel(64);
    let (dlq_tx, dlq) = mpsc::channel(64);
    let (ack_tx, acks) = mpsc::unbounded_channel();
    let (req_tx, requests) = mpsc::unbounded_channel();
    let (commits, crx) = mpsc::unbounded_channel();
    let n = SinkNode {
        node: "sinks.out".into(),
        sink: Box::new(sink),
        inputs,
        rx,
        out: Outputs { edges: vec![], dlq: Some(Edge { to: "dlq".into(), input: 0, tx: dlq_tx }) },
        commits: crx,
        acks: ack_tx,
        requests: req_tx,
        stats: Arc::new(NodeStats::default()),
        retry: RetryPolicy::new(Duration::from_millis(1), Duration::from_millis(1), 5, None),
    };
    Harness { inputs: vec![tx; inputs], dlq, acks, requests, commits, node: tokio::spawn(n.run()) }
}

fn batch(source: &str, docs: &[&str]) -> Batch {
    Batch::json_docs(source, docs)
}

impl Harness {
    async fn data(&self, input: usize, docs: &[&str]) {
        self.inputs[input].send(Envelope { input, msg: Msg::Data(batch("s", docs)) }).await.unwrap();
    }
    async fn barrier(&self, input: usize, epoch: u64, last: bool) {
        self.inputs[input].send(Envelope { input, msg: Msg::Barrier(Barrier { epoch, last, drained: last }) }).await.unwrap();
    }
    /// Close the inputs and wait for the node to end.
    async fn end(mut self) -> (Result<(), SinkError>, Self) {
        self.inputs.clear();
        let r = (&mut self.node).await.unwrap();
        (r, self)
    }
}

#[tokio::test]
async fn barriers_are_aligned_across_inputs_before_prepare() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut h = node(StandIn { log: log.clone(), ..Default::default() }, 2);
    h.data(0, &["a1"]).await;
    h.barrier(0, 1, false).await;
    h.data(0, &["a2"]).await; // after the barrier on input 0: belongs to epoch 2
    h.data(1, &["b1"]).await;
    h.barrier(1, 1, false).await;
    h.barrier(0, 2, true).await;
    h.barrier(1, 2, true).await;
    let a1 = h.acks.recv().await.unwrap();
    let a2 = h.acks.recv().await.unwrap();
    assert_eq!((a1.epoch, a1.state), (1, Some(json!(["a1", "b1"]))));
    assert_eq!((a2.epoch, a2.state), (2, Some(json!(["a2"]))));
    h.commits.send(Commit { epoch: 2, token: json!(["a2"]) }).unwrap();
    let (r, _) = h.end().await;
    r.unwrap();
    assert_eq!(*log.lock().unwrap(), ["write a1", "write b1", "prepare 1", "write a2", "prepare 2", r#"commit ["a2"]"#]);
}

/// A write that failed half-way is not retried (a retry would repeat the
/// part already written): the node stops and the run fails.
#[tokio::test]
async fn a_failed_write_stops_the_run_without_a_retry() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let h = node(StandIn { log: log.clone(), write_failures: 1, ..Default::default() }, 1);
    h.data(0, &["a1", "a2"]).await;
    let (r, mut h) = h.end().await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("disk hiccup") && e.contains("not retried") && e.contains("last checkpoint"), "{e}");
    assert_eq!(*log.lock().unwrap(), ["write a1 a2"], "called once");
    assert!(h.acks.try_recv().is_err(), "no acknowledgement: the checkpoint cannot move past the batch");
    match h.requests.try_recv() {
        Ok(Request::Failed { node, error }) => assert_eq!((node.as_str(), error), ("sinks.out", e)),
        other => panic!("expected a failure report, got {other:?}"),
    }
}

/// A prepare that failed after taking the staged output out of the sink is
/// not retried: a retry would acknowledge the epoch with a token missing it.
#[tokio::test]
async fn a_failed_prepare_stops_the_run_without_a_retry() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let h = node(StandIn { log: log.clone(), prepare_failures: 1, ..Default::default() }, 1);
    h.data(0, &["a1"]).await;
    h.barrier(0, 1, false).await;
    let (r, mut h) = h.end().await;
    assert!(matches!(r, Err(SinkError::Halted { call: "prepare", .. })), "{r:?}");
    assert_eq!(*log.lock().unwrap(), ["write a1", "prepare 1"]);
    assert!(h.acks.try_recv().is_err(), "an empty token must never be acknowledged");
    assert!(matches!(h.requests.try_recv(), Ok(Request::Failed { .. })));
}

/// `commit` is idempotent: a retryable error is retried.
#[tokio::test]
async fn a_retryable_commit_error_is_retried() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = StandIn { log: log.clone(), commit_failures: 2, commit_retryable: true, ..Default::default() };
    let mut h = node(sink, 1);
    h.data(0, &["a1"]).await;
    h.barrier(0, 1, true).await;
    let ack = h.acks.recv().await.unwrap();
    h.commits.send(Commit { epoch: 1, token: ack.state.unwrap() }).unwrap();
    let (r, _) = h.end().await;
    r.unwrap();
    let commits = log.lock().unwrap().iter().filter(|l| l.starts_with("commit")).count();
    assert_eq!(commits, 3);
}

/// Invariant 5: a record the sink refuses after the host converted the batch
/// for it reaches the DLQ as it arrived, and the sink's index (into the
/// converted batch, which lacks the records the conversion refused) is
/// mapped back to the right record.
#[tokio::test]
async fn a_refused_record_reaches_the_dlq_as_it_arrived() {
    let sink = StandIn { arrow: true, refuse: vec![1], ..Default::default() };
    let h = node(sink, 1);
    let docs = [r#"{"id":"a","n":1.5,"x":"k"}"#, "[1,2]", r#"{"id":"c", "n":7}"#, r#"{"id":"d","n":2.5}"#];
    h.data(0, &docs).await;
    let (r, mut h) = h.end().await;
    r.unwrap();
    let mut letters = Vec::new();
    while let Ok(env) = h.dlq.try_recv() {
        if let Msg::DeadLetters(d) = env.msg {
            letters.extend(d);
        }
    }
    // Byte for byte as they arrived, not as the host converted them.
    let seen: Vec<_> = letters.iter().map(|d| (d.code.as_str(), d.meta.seq.as_str(), String::from_utf8_lossy(&d.record))).collect();
    assert_eq!(seen, [("malformed", "1", "[1,2]".into()), ("schema_mismatch", "2", r#"{"id":"c", "n":7}"#.into())]);
    assert!(letters.iter().all(|d| &*d.node == "sinks.out"));
}

/// The last checkpoint is written, then the sink cannot commit it: the run
/// fails (non-zero exit) instead of ending with a warning.
#[tokio::test]
async fn a_failed_commit_of_the_last_checkpoint_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::checkpoint::open(dir.path().to_str().unwrap()).await.unwrap();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (btx, mut brx) = mpsc::unbounded_channel::<Barrier>();
    let (commit_tx, commit_rx) = mpsc::unbounded_channel();
    let (etx, erx) = mpsc::channel(8);
    let sink = StandIn { commit_failures: 1, commit_retryable: false, ..Default::default() };
    let sink_node = SinkNode {
        node: "sinks.out".into(),
        sink: Box::new(sink),
        inputs: 1,
        rx: erx,
        out: Outputs { edges: vec![], dlq: None },
        commits: commit_rx,
        acks: ack_tx.clone(),
        requests: req_tx.clone(),
        stats: Arc::new(NodeStats::default()),
        retry: RetryPolicy::default(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move { sink_node.run().await.map_err(super::runtime::StartError::from) });
    // A stand-in source: exhausted at once, forwards barriers and reports a position.
    req_tx.send(Request::Exhausted { node: "sources.s".into() }).unwrap();
    tasks.spawn(async move {
        while let Some(b) = brx.recv().await {
            let _ = etx.send(Envelope { input: 0, msg: Msg::Barrier(b) }).await;
            let _ = ack_tx.send(Ack { node: "sources.s".into(), epoch: b.epoch, state: Some(json!({"pos": 1})) });
            if b.last {
                break;
            }
        }
        Ok(())
    });
    drop(req_tx);
    let (_keep, shutdown) = watch::channel(false);
    let coordinator = Coordinator {
        pipeline: "p".into(),
        store,
        epoch: 0,
        interval: Duration::from_secs(3600),
        sources: vec![("sources.s".into(), btx)],
        sinks: vec![("sinks.out".into(), commit_tx)],
        expected: BTreeSet::from(["sources.s".to_string(), "sinks.out".to_string()]),
        acks: ack_rx,
        requests: req_rx,
        shutdown,
        progress: Arc::new(Progress::default()),
    };
    let result = coordinator.run().await;
    assert_eq!(result.as_ref().ok(), Some(&1), "the last checkpoint is written");
    let e = super::runtime::finish(result, tasks, Vec::new()).await.unwrap_err().to_string();
    assert!(e.contains("epoch 1") && e.contains("rename failed") && e.contains("run the pipeline again"), "{e}");
}

/// A sink whose writes are detached and complete only when the test says
/// so: each `write_detached` hands the test a gate; `true` completes the
/// write refusing the batch's first record, `false` fails it.
struct Deferred {
    log: Arc<Mutex<Vec<String>>>,
    gates: mpsc::UnboundedSender<oneshot::Sender<bool>>,
}

#[async_trait]
impl Sink for Deferred {
    fn takes(&self) -> Format {
        Format::Json
    }
    async fn write(&mut self, _: &Batch) -> Result<Written, SinkError> {
        unreachable!("the node uses write_detached when a sink offers it")
    }
    fn write_detached(&mut self, batch: &Batch) -> Option<Detached> {
        let t = tags(batch).join(" ");
        self.log.lock().unwrap().push(format!("start {t}"));
        let (gate, opened) = oneshot::channel();
        self.gates.send(gate).unwrap();
        let (log, n) = (self.log.clone(), batch.len());
        Some(Box::pin(async move {
            let ok = opened.await.unwrap_or(false);
            log.lock().unwrap().push(format!("done {t}"));
            match ok {
                true => Ok(Written { accepted: n - 1, refused: vec![Rejection::new(0, "opensearch_rejected", "mapping")] }),
                false => Err(io("bulk request refused", false)),
            }
        }))
    }
    async fn prepare(&mut self, epoch: u64) -> Result<Value, SinkError> {
        self.log.lock().unwrap().push(format!("prepare {epoch}"));
        Ok(json!(null))
    }
    async fn commit(&mut self, _: &Value) -> Result<(), SinkError> {
        Ok(())
    }
    async fn recover(&mut self, _: Option<&Value>) -> Result<(), SinkError> {
        Ok(())
    }
}

fn deferred() -> (Harness, Arc<Mutex<Vec<String>>>, mpsc::UnboundedReceiver<oneshot::Sender<bool>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (gates, opened) = mpsc::unbounded_channel();
    (node(Deferred { log: log.clone(), gates }, 1), log, opened)
}

/// Detached writes overlap, but a barrier waits for them: `prepare` and the
/// acknowledgement come only after every write before the barrier
/// completed, and their refusals reach the DLQ ahead of the barrier, in
/// batch order even when a later write completes first.
#[tokio::test]
async fn detached_writes_complete_before_the_barrier_passes() {
    let (mut h, log, mut gates) = deferred();
    h.data(0, &["a1", "a2"]).await;
    h.data(0, &["b1", "b2"]).await;
    h.barrier(0, 1, false).await;
    let (a, b) = (gates.recv().await.unwrap(), gates.recv().await.unwrap());
    // Both writes started before either completed: they overlap.
    assert_eq!(*log.lock().unwrap(), ["start a1 a2", "start b1 b2"]);
    // Give a node that would not wait every chance to pass the barrier.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(h.acks.try_recv().is_err(), "acknowledged a barrier before its writes completed");
    b.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(h.acks.try_recv().is_err(), "acknowledged a barrier before its writes completed");
    a.send(true).unwrap();
    let ack = h.acks.recv().await.unwrap();
    assert_eq!(ack.epoch, 1);
    assert_eq!(*log.lock().unwrap(), ["start a1 a2", "start b1 b2", "done b1 b2", "done a1 a2", "prepare 1"]);
    let mut seen = Vec::new();
    while let Ok(env) = h.dlq.try_recv() {
        match env.msg {
            Msg::DeadLetters(d) => seen.extend(d.iter().map(|l| String::from_utf8_lossy(&l.record).into_owned())),
            Msg::Barrier(b) => seen.push(format!("barrier {}", b.epoch)),
            _ => {}
        }
    }
    assert_eq!(seen, ["a1", "b1", "barrier 1"]);
    let (r, _) = h.end().await;
    r.unwrap();
}

/// A detached write that fails stops the node as a failed `write` does:
/// no acknowledgement, a failure report, and the writes after it dropped.
#[tokio::test]
async fn a_failed_detached_write_stops_the_run() {
    let (mut h, log, mut gates) = deferred();
    h.data(0, &["a1"]).await;
    h.data(0, &["b1"]).await;
    h.barrier(0, 1, false).await;
    let a = gates.recv().await.unwrap();
    let _b = gates.recv().await.unwrap();
    a.send(false).unwrap();
    let r = (&mut h.node).await.unwrap();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("bulk request refused") && e.contains("not retried"), "{e}");
    assert!(h.acks.try_recv().is_err(), "no acknowledgement after a failed write");
    assert!(matches!(h.requests.try_recv(), Ok(Request::Failed { .. })));
    assert!(!log.lock().unwrap().iter().any(|l| l.starts_with("prepare")));
}
