//! Wires a plan into running tasks, in steps: recover (last checkpoint, sinks
//! recovered to it), wire (one channel per consuming node), spawn (a thread
//! per stage, a blocking-pool thread per sink, a task per source), then the
//! coordinator runs until the last checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::info;

use super::coordinator::{Coordinator, RunError};
use super::edge::{Edge, Envelope, Outputs};
use super::msg::{Ack, Barrier, Request};
use super::plan::{Plan, StagePlugin};
use super::sink_node::{Commit, SinkNode};
use super::stage::{restore, StageNode};
use super::stats::{NodeSummary, Registry};
use crate::checkpoint::{self, Checkpoint, CheckpointError, CheckpointStore};
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

/// Runs a pipeline to its last checkpoint: [`recover`] the last checkpoint,
/// [`Wiring::new`] the graph's channels, spawn stages, sinks and sources,
/// then let the coordinator drive checkpoints until the end.
pub async fn run(p: &Pipeline, plan: Plan, shutdown: watch::Receiver<bool>) -> Result<RunSummary, StartError> {
    let started = Instant::now();
    let stats = Registry::default();
    // Before any work: a pipeline that asked for an admin endpoint and cannot
    // have it does not start.
    let _admin = match &p.spec.admin {
        Some(a) => Some(crate::admin::start(a, &p.name, stats.clone()).await?),
        None => None,
    };
    let rec = recover(p).await?;
    // The resume point is the last checkpoint until this run writes one.
    stats.progress.epoch.store(rec.resumed_from, std::sync::atomic::Ordering::Relaxed);
    let mut w = Wiring::new(p, plan.source_formats.clone());
    let threads = spawn_stages(&mut w, plan, &rec, &stats)?;
    let mut tasks = tokio::task::JoinSet::new();
    let commit_txs = spawn_sinks(&mut w, rec.sinks, &stats, &mut tasks);
    let barrier_txs = spawn_sources(&w, p, &rec.checkpoint, &stats, &mut tasks);
    let expected = w.expected();
    let (acks, requests) = w.close();

    // Held until the sinks committed the last checkpoint: an S3 lease is
    // released only then, so no commit runs after another process may own
    // the store.
    let store: std::sync::Arc<dyn CheckpointStore> = rec.store.into();
    let coordinator = Coordinator {
        pipeline: p.name.clone(),
        store: Box::new(store.clone()),
        epoch: rec.resumed_from,
        interval: p.spec.checkpoint.interval.0,
        sources: barrier_txs,
        sinks: commit_txs,
        expected,
        acks,
        requests,
        shutdown,
        progress: stats.progress.clone(),
    };
    let epoch = finish(coordinator.run().await, tasks, threads).await;
    drop(store);
    let epoch = epoch?;
    Ok(RunSummary {
        pipeline: p.name.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        epoch,
        resumed_from: rec.resumed_from,
        nodes: stats.snapshot(),
    })
}

/// What a run starts from: the checkpoint store, its last checkpoint, and
/// every sink (the DLQ included) already recovered to it.
struct Recovered {
    store: Box<dyn CheckpointStore>,
    checkpoint: Option<Checkpoint>,
    resumed_from: u64,
    /// Node key → recovered sink; the DLQ under [`DLQ`].
    sinks: BTreeMap<String, Box<dyn Sink>>,
}

impl Recovered {
    fn state_of(&self, key: &str) -> Option<serde_json::Value> {
        state_in(&self.checkpoint, key)
    }
}

fn state_in(cp: &Option<Checkpoint>, key: &str) -> Option<serde_json::Value> {
    cp.as_ref().and_then(|c| c.nodes.get(key).cloned())
}

/// Load the last checkpoint and recover every sink to it. Sinks go first:
/// recovery completes the last checkpoint's commits and discards anything
/// staged after it, before a single record is re-read.
async fn recover(p: &Pipeline) -> Result<Recovered, StartError> {
    let store = checkpoint::open_with(&p.spec.checkpoint.dir, p.spec.checkpoint.lease_ttl.map(|d| d.0)).await?;
    let checkpoint = store.load().await?;
    if let Some(cp) = &checkpoint {
        if cp.pipeline != p.name {
            return Err(CheckpointError::Foreign { store: store.describe(), found: cp.pipeline.clone(), expected: p.name.clone() }.into());
        }
        info!(epoch = cp.epoch, store = %store.describe(), "resuming from checkpoint");
    }
    let resumed_from = checkpoint.as_ref().map_or(0, |c| c.epoch);
    let mut sinks: BTreeMap<String, Box<dyn Sink>> = BTreeMap::new();
    for (name, sk) in &p.spec.sinks {
        let key = format!("sinks.{name}");
        let mut s = sk.build(name)?;
        s.recover(state_in(&checkpoint, &key).as_ref()).await?;
        sinks.insert(key, s);
    }
    let mut dlq_sink: Box<dyn Sink> = sink::dlq::dlq_sink(DLQ, &p.spec.dlq)?;
    dlq_sink.recover(state_in(&checkpoint, DLQ).as_ref()).await?;
    sinks.insert(DLQ.into(), dlq_sink);
    Ok(Recovered { store, checkpoint, resumed_from, sinks })
}

/// The graph's channels: one bounded input channel per consuming node (the
/// DLQ consumes every other node), plus the coordinator's ack and request
/// channels. Nodes take their receivers and clones of the senders.
struct Wiring {
    /// Node key → its inputs' node keys, in declaration order.
    inputs: BTreeMap<String, Vec<String>>,
    /// Producer (bare name) → consuming node names.
    consumers: BTreeMap<String, Vec<String>>,
    /// Bare name → node key.
    keys: BTreeMap<String, String>,
    producers: Vec<String>,
    txs: BTreeMap<String, mpsc::Sender<Envelope>>,
    rxs: BTreeMap<String, mpsc::Receiver<Envelope>>,
    ack_tx: mpsc::UnboundedSender<Ack>,
    ack_rx: mpsc::UnboundedReceiver<Ack>,
    req_tx: mpsc::UnboundedSender<Request>,
    req_rx: mpsc::UnboundedReceiver<Request>,
    source_formats: BTreeMap<String, crate::batch::Format>,
}

impl Wiring {
    fn new(p: &Pipeline, source_formats: BTreeMap<String, crate::batch::Format>) -> Wiring {
        let spec = &p.spec;
        let keys: BTreeMap<String, String> = spec
            .sources
            .keys()
            .chain(spec.stages.keys())
            .chain(spec.sinks.keys())
            .map(|n| (n.clone(), p.node_key(n).expect("checked graph")))
            .collect();
        let key_of = |n: &String| keys[n].clone();
        let mut inputs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, st) in &spec.stages {
            inputs.insert(key_of(name), st.inputs.iter().map(key_of).collect());
        }
        for (name, sk) in &spec.sinks {
            inputs.insert(key_of(name), sk.inputs().iter().map(key_of).collect());
        }
        let producers: Vec<String> = spec
            .sources
            .keys()
            .map(|n| format!("sources.{n}"))
            .chain(spec.stages.keys().map(|n| format!("stages.{n}")))
            .chain(spec.sinks.keys().map(|n| format!("sinks.{n}")))
            .collect();
        inputs.insert(DLQ.into(), producers.clone());
        let cap = spec.batch.channel_capacity.max(1);
        let (mut txs, mut rxs) = (BTreeMap::new(), BTreeMap::new());
        for (node, ins) in &inputs {
            let (tx, rx) = mpsc::channel(cap * ins.len().max(1));
            txs.insert(node.clone(), tx);
            rxs.insert(node.clone(), rx);
        }
        let consumers = p.consumers();
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        Wiring { inputs, consumers, keys, producers, txs, rxs, ack_tx, ack_rx, req_tx, req_rx, source_formats }
    }

    fn edge(&self, from: &str, to: &str) -> Edge {
        Edge {
            to: to.to_string(),
            input: self.inputs[to].iter().position(|i| i == from).expect("edge in inputs"),
            tx: self.txs[to].clone(),
        }
    }

    /// The outputs of node `from` (bare name `bare`): its consumers and the DLQ.
    fn outputs(&self, from: &str, bare: &str) -> Outputs {
        Outputs {
            edges: self.consumers.get(bare).into_iter().flatten().map(|c| self.edge(from, &self.keys[c])).collect(),
            dlq: Some(self.edge(from, DLQ)),
        }
    }

    fn take_rx(&mut self, key: &str) -> mpsc::Receiver<Envelope> {
        self.rxs.remove(key).expect("one receiver per consuming node")
    }

    /// Every node that must acknowledge a barrier: every producer and the DLQ.
    fn expected(&self) -> BTreeSet<String> {
        self.producers.iter().cloned().chain(std::iter::once(DLQ.to_string())).collect()
    }

    /// Drop the wiring's own senders, so channels close when the nodes that
    /// hold clones exit; hand the coordinator its receivers.
    fn close(self) -> (mpsc::UnboundedReceiver<Ack>, mpsc::UnboundedReceiver<Request>) {
        (self.ack_rx, self.req_rx)
    }
}

/// One OS thread per stage, its plugin re-initialised on the restored state.
fn spawn_stages(w: &mut Wiring, plan: Plan, rec: &Recovered, stats: &Registry) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    let mut threads = Vec::new();
    for (name, sp) in plan.stages {
        let key = format!("stages.{name}");
        let saved = rec.state_of(&key);
        let plugin = match sp.plugin {
            StagePlugin::Transform(p) => p,
            StagePlugin::Aggregate { plugin, windowing, state_memory } => {
                let node = super::window::spawn_prep(super::window::Prep {
                    name: name.clone(),
                    plugin,
                    windowing,
                    state_memory,
                    keyed: sp.state,
                    saved: saved.as_ref(),
                    inputs: w.inputs[&key].len(),
                    rx: w.take_rx(&key),
                    out: w.outputs(&key, &name),
                    acks: w.ack_tx.clone(),
                    requests: w.req_tx.clone(),
                    stats: stats.node(&key),
                })?;
                threads.push(node.spawn());
                continue;
            }
        };
        let mut plugin = plugin;
        // Restore, then init again: `init` must see the state it left before the restart.
        restore(&sp.state, saved.as_ref());
        plugin.reinit()?;
        let node = StageNode {
            node: key.clone(),
            plugin,
            inputs: w.inputs[&key].len(),
            rx: w.take_rx(&key),
            out: w.outputs(&key, &name),
            acks: w.ack_tx.clone(),
            requests: w.req_tx.clone(),
            stats: stats.node(&key),
            state: sp.state,
        };
        threads.push(node.spawn());
    }
    Ok(threads)
}

/// One sink node per sink and the DLQ, each on a thread of the blocking pool
/// driving its own future: encoding (Parquet) is CPU work and must not starve
/// the tokio workers that serve sources, network sinks and lease heartbeats.
fn spawn_sinks(
    w: &mut Wiring,
    sinks: BTreeMap<String, Box<dyn Sink>>,
    stats: &Registry,
    tasks: &mut tokio::task::JoinSet<Result<(), StartError>>,
) -> Vec<(String, mpsc::UnboundedSender<Commit>)> {
    let mut commit_txs = Vec::new();
    for (key, s) in sinks {
        let (ctx, crx) = mpsc::unbounded_channel();
        commit_txs.push((key.clone(), ctx));
        // The DLQ has no DLQ: a record it cannot take stops the run.
        let dlq = (key != DLQ).then(|| w.edge(&key, DLQ));
        let node = SinkNode {
            node: key.clone(),
            sink: s,
            inputs: w.inputs[&key].len(),
            rx: w.take_rx(&key),
            out: Outputs { edges: vec![], dlq },
            commits: crx,
            acks: w.ack_tx.clone(),
            requests: w.req_tx.clone(),
            stats: stats.node(&key),
            retry: RetryPolicy::default(),
        };
        let rt = tokio::runtime::Handle::current();
        tasks.spawn_blocking(move || rt.block_on(node.run()).map_err(StartError::from));
    }
    commit_txs
}

/// One task per source, resuming from its checkpointed state; a source that
/// fails reports to the coordinator, which stops the run.
fn spawn_sources(
    w: &Wiring,
    p: &Pipeline,
    cp: &Option<Checkpoint>,
    stats: &Registry,
    tasks: &mut tokio::task::JoinSet<Result<(), StartError>>,
) -> Vec<(String, mpsc::UnboundedSender<Barrier>)> {
    let mut barrier_txs = Vec::new();
    for (name, sp) in &p.spec.sources {
        let key = format!("sources.{name}");
        let (btx, brx) = mpsc::unbounded_channel();
        barrier_txs.push((key.clone(), btx));
        let ctx = SourceCtx {
            node: key.clone(),
            name: name.as_str().into(),
            pipeline: p.name.as_str().into(),
            out: w.outputs(&key, name),
            barriers: brx,
            acks: w.ack_tx.clone(),
            requests: w.req_tx.clone(),
            resume: state_in(cp, &key),
            batch: p.spec.batch,
            stats: stats.node(&key),
            preferred: w.source_formats[name],
        };
        let handle = source::spawn(sp, ctx);
        let req = w.req_tx.clone();
        tasks.spawn(async move {
            match handle.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    let _ = req.send(Request::Failed { node: key, error: e.to_string() });
                    Err(StartError::Source(e))
                }
                Err(join) => {
                    let _ = req.send(Request::Failed { node: key, error: join.to_string() });
                    Ok(())
                }
            }
        });
    }
    barrier_txs
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
