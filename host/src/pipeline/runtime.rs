//! Wires a plan into running tasks: one channel per consuming node, a thread
//! per stage, a task per source and sink, and the coordinator; then waits for
//! the last checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::info;

use super::coordinator::{Coordinator, RunError};
use super::edge::{Edge, Envelope, Outputs};
use super::plan::Plan;
use super::sink_node::SinkNode;
use super::stage::{restore, StageNode};
use super::stats::{NodeSummary, Registry};
use crate::checkpoint::{self, CheckpointError};
use crate::config::Pipeline;
use crate::retry::RetryPolicy;
use crate::sink::{self, Sink, SinkError};
use crate::source::{self, SourceCtx, SourceError};

/// The DLQ's node key.
pub const DLQ: &str = "dlq";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub pipeline: String,
    pub elapsed_ms: u64,
    /// Epoch of the last checkpoint written (the resume point).
    pub epoch: u64,
    /// Epoch the run resumed from (0 = fresh start).
    pub resumed_from: u64,
    pub nodes: BTreeMap<String, NodeSummary>,
}

pub async fn run(p: &Pipeline, plan: Plan, shutdown: watch::Receiver<bool>) -> Result<RunSummary, StartError> {
    let started = Instant::now();
    let spec = &p.spec;
    let stats = Registry::default();
    // Before any work: a pipeline that asked for an admin endpoint and cannot
    // have it does not start.
    let _admin = match &spec.admin {
        Some(a) => Some(crate::admin::start(a, &p.name, stats.clone()).await?),
        None => None,
    };
    let store = checkpoint::open(&spec.checkpoint.dir).await?;
    let cp = store.load().await?;
    if let Some(cp) = &cp {
        if cp.pipeline != p.name {
            return Err(CheckpointError::Foreign { store: store.describe(), found: cp.pipeline.clone(), expected: p.name.clone() }.into());
        }
        info!(epoch = cp.epoch, store = %store.describe(), "resuming from checkpoint");
    }
    let resumed_from = cp.as_ref().map_or(0, |c| c.epoch);
    // The resume point is the last checkpoint until this run writes one.
    stats.progress.epoch.store(resumed_from, std::sync::atomic::Ordering::Relaxed);
    let state_of = |key: &str| cp.as_ref().and_then(|c| c.nodes.get(key).cloned());

    // Sinks first: recovery completes the last checkpoint's commits and
    // discards anything staged after it, before a single record is re-read.
    let mut sinks: BTreeMap<String, Box<dyn Sink>> = BTreeMap::new();
    for (name, sk) in &spec.sinks {
        let key = format!("sinks.{name}");
        let mut s = sink::build(name, sk)?;
        s.recover(state_of(&key).as_ref()).await?;
        sinks.insert(key, s);
    }
    let mut dlq_sink: Box<dyn Sink> = Box::new(sink::dlq::dlq_sink(DLQ, spec.dlq.path.as_ref())?);
    dlq_sink.recover(state_of(DLQ).as_ref()).await?;

    let cap = spec.batch.channel_capacity.max(1);
    let consumers = p.consumers();
    let key_of = |n: &str| p.node_key(n).expect("checked graph");
    // Inputs of every consuming node, in declaration order; the DLQ takes every other node.
    let mut inputs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, st) in &spec.stages {
        inputs.insert(key_of(name), st.inputs.iter().map(|i| key_of(i)).collect());
    }
    for (name, sk) in &spec.sinks {
        inputs.insert(key_of(name), sk.inputs().iter().map(|i| key_of(i)).collect());
    }
    let producers: Vec<String> = spec
        .sources
        .keys()
        .map(|n| format!("sources.{n}"))
        .chain(spec.stages.keys().map(|n| format!("stages.{n}")))
        .chain(spec.sinks.keys().map(|n| format!("sinks.{n}")))
        .collect();
    inputs.insert(DLQ.into(), producers.clone());

    let mut rxs: BTreeMap<String, mpsc::Receiver<Envelope>> = BTreeMap::new();
    let mut txs: BTreeMap<String, mpsc::Sender<Envelope>> = BTreeMap::new();
    for (node, ins) in &inputs {
        let (tx, rx) = mpsc::channel(cap * ins.len().max(1));
        txs.insert(node.clone(), tx);
        rxs.insert(node.clone(), rx);
    }
    let edge = |from: &str, to: &str| Edge {
        to: to.to_string(),
        input: inputs[to].iter().position(|i| i == from).expect("edge in inputs"),
        tx: txs[to].clone(),
    };
    let outputs = |from: &str, bare: &str| Outputs {
        edges: consumers.get(bare).into_iter().flatten().map(|c| edge(from, &key_of(c))).collect(),
        dlq: Some(edge(from, DLQ)),
    };

    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let mut expected: BTreeSet<String> = producers.iter().cloned().collect();
    expected.insert(DLQ.into());

    let mut threads = Vec::new();
    for (name, mut sp) in plan.stages {
        let key = format!("stages.{name}");
        // Restore, then init again: `init` must see the state it left before the restart.
        restore(&sp.state, state_of(&key).as_ref());
        sp.plugin.reinit()?;
        let node = StageNode {
            node: key.clone(),
            plugin: sp.plugin,
            inputs: inputs[&key].len(),
            rx: rxs.remove(&key).expect("stage channel"),
            out: outputs(&key, &name),
            acks: ack_tx.clone(),
            requests: req_tx.clone(),
            stats: stats.node(&key),
            state: sp.state,
        };
        threads.push(node.spawn());
    }

    let mut tasks = tokio::task::JoinSet::new();
    let mut commit_txs = Vec::new();
    let sink_nodes = sinks.into_iter().map(|(k, s)| (k, s, true)).chain(std::iter::once((DLQ.to_string(), dlq_sink, false)));
    for (key, s, has_dlq) in sink_nodes {
        let (ctx, crx) = mpsc::unbounded_channel();
        commit_txs.push((key.clone(), ctx));
        let node = SinkNode {
            node: key.clone(),
            sink: s,
            inputs: inputs[&key].len(),
            rx: rxs.remove(&key).expect("sink channel"),
            out: Outputs { edges: vec![], dlq: has_dlq.then(|| edge(&key, DLQ)) },
            commits: crx,
            acks: ack_tx.clone(),
            requests: req_tx.clone(),
            stats: stats.node(&key),
            retry: RetryPolicy::default(),
        };
        tasks.spawn(async move { node.run().await.map_err(StartError::from) });
    }

    let mut barrier_txs = Vec::new();
    for (name, sp) in &spec.sources {
        let key = format!("sources.{name}");
        let (btx, brx) = mpsc::unbounded_channel();
        barrier_txs.push((key.clone(), btx));
        let ctx = SourceCtx {
            node: key.clone(),
            name: name.as_str().into(),
            pipeline: p.name.as_str().into(),
            out: outputs(&key, name),
            barriers: brx,
            acks: ack_tx.clone(),
            requests: req_tx.clone(),
            resume: state_of(&key),
            batch: spec.batch,
            stats: stats.node(&key),
            preferred: plan.source_formats[name],
        };
        let handle = source::spawn(sp, ctx);
        let req = req_tx.clone();
        tasks.spawn(async move {
            match handle.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    let _ = req.send(super::msg::Request::Failed { node: key, error: e.to_string() });
                    Err(StartError::Source(e))
                }
                Err(join) => {
                    let _ = req.send(super::msg::Request::Failed { node: key, error: join.to_string() });
                    Ok(())
                }
            }
        });
    }
    // Nodes hold their own clones; dropping ours lets channels close when nodes exit.
    drop((txs, ack_tx, req_tx));

    let coordinator = Coordinator {
        pipeline: p.name.clone(),
        store,
        epoch: resumed_from,
        interval: spec.checkpoint.interval.0,
        sources: barrier_txs,
        sinks: commit_txs,
        expected,
        acks: ack_rx,
        requests: req_rx,
        shutdown,
        progress: stats.progress.clone(),
    };
    let epoch = finish(coordinator.run().await, tasks, threads).await?;
    Ok(RunSummary {
        pipeline: p.name.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        epoch,
        resumed_from,
        nodes: stats.snapshot(),
    })
}

/// The end of a run. After the last checkpoint is written the nodes still
/// have work (sinks make that checkpoint visible): one that fails now fails
/// the run, so the exit code says the output is not complete yet. On error
/// before it, everything stops; nothing past the last checkpoint was committed.
pub(crate) async fn finish(
    result: Result<u64, RunError>,
    mut tasks: tokio::task::JoinSet<Result<(), StartError>>,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> Result<u64, StartError> {
    let epoch = match result {
        Ok(epoch) => epoch,
        Err(e) => {
            tasks.abort_all();
            return Err(e.into());
        }
    };
    let mut failed = None;
    while let Some(r) = tasks.join_next().await {
        let error = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(join) => format!("a node task ended abnormally: {join}"),
        };
        tracing::error!(%error, epoch, "a node failed after the last checkpoint");
        failed.get_or_insert(error);
    }
    for t in threads {
        let _ = t.join();
    }
    match failed {
        None => Ok(epoch),
        Some(error) => Err(RunError::AfterCheckpoint { epoch, error }.into()),
    }
}
