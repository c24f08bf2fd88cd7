//! The merge task: the single emitter of the Kinesis source.
//!
//! Why one emitter: positions must describe exactly what was sent before each
//! barrier, and a child shard's first record must leave after its parents'
//! last ones. Readers report in per-shard order; this task emits, records the
//! position after every piece, places barriers between pieces, and starts a
//! child only when it has processed the `End` of each of its parents — so
//! every parent record is downstream before any child record, and the state
//! says which shards are finished (never re-read) and where the others are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::{self, CallError, ErrorKind, StreamId};
use super::config::{KinesisSourceSpec, ReadMode};
use super::position::{self, ShardPosition, SourceState, StartAt, STATE_VERSION};
use super::reader::{ReaderCtx, ShardEvent};
use super::records::{Piece, Shaper};
use super::shards::{self, Lineage};
use super::{efo, poll};
use crate::batch::Origin;
use crate::pipeline::msg::{Ack, Barrier, Request};
use crate::source::{SourceCtx, SourceError};

const EVENT_CAPACITY: usize = 16;
const LAG_REPORT: Duration = Duration::from_secs(30);

struct Running {
    task: JoinHandle<()>,
    closed: Arc<AtomicBool>,
}

pub struct Merge {
    spec: KinesisSourceSpec,
    ctx: SourceCtx,
    client: Client,
    stream: StreamId,
    /// "stream X at ENDPOINT (region R)", for error messages.
    target: String,
    state: SourceState,
    lineage: Lineage,
    running: BTreeMap<String, Running>,
    tx: mpsc::Sender<ShardEvent>,
    rx: mpsc::Receiver<ShardEvent>,
    /// Fan-out consumer ARN; `None` reads by polling.
    consumer: Option<String>,
    lag: BTreeMap<String, i64>,
    caught_up: BTreeSet<String>,
    last_data: Instant,
    exhausted: bool,
}

enum Flow {
    Continue,
    Stop,
}

enum Wake {
    Barrier(Option<Barrier>),
    Event(ShardEvent),
    Discover,
    Tick,
}

impl Drop for Merge {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}

impl Merge {
    /// Validates, connects, checks the stream and the resume state, and
    /// registers the fan-out consumer when asked to.
    pub async fn start(spec: KinesisSourceSpec, ctx: SourceCtx) -> Result<Self, SourceError> {
        let config_err = |message: String| SourceError::Config { source_name: ctx.node.clone(), message };
        spec.validate().map_err(config_err)?;
        let stream = StreamId::parse(&spec.stream);
        let client = client::build(spec.effective_region(), spec.endpoint.as_deref()).await.map_err(config_err)?;
        let region = client.config().region().map(|r| r.to_string()).unwrap_or_default();
        let target = format!(
            "stream {} at {} (region {region})",
            stream,
            spec.endpoint.as_deref().unwrap_or("the AWS endpoint")
        );
        let state = match &ctx.resume {
            Some(v) => {
                let s = SourceState::from_json(v).map_err(config_err)?;
                if s.stream != stream.short_name() {
                    return Err(config_err(format!(
                        "the checkpoint holds positions of stream {:?}, this source reads {:?}; \
                         point `checkpoint.dir` elsewhere or delete the checkpoint to start over",
                        s.stream,
                        stream.short_name()
                    )));
                }
                s
            }
            None => SourceState {
                v: STATE_VERSION,
                stream: stream.short_name().to_string(),
                since_ms: position::fresh_since(&spec),
                ..Default::default()
            },
        };
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let mut m = Merge {
            spec,
            ctx,
            client,
            stream,
            target,
            state,
            lineage: Lineage::default(),
            running: BTreeMap::new(),
            tx,
            rx,
            consumer: None,
            lag: BTreeMap::new(),
            caught_up: BTreeSet::new(),
            last_data: Instant::now(),
            exhausted: false,
        };
        m.first_listing().await?;
        m.consumer = m.fan_out_consumer().await?;
        Ok(m)
    }

    async fn first_listing(&mut self) -> Result<(), SourceError> {
        let listing = self
            .spec
            .retry_policy()
            .retry(|_| shards::list(&self.client, &self.stream), CallError::retryable)
            .await
            .map_err(|e| self.remote(e, "listing shards"))?;
        if listing.is_empty() {
            return Err(SourceError::Remote {
                source_name: self.ctx.node.clone(),
                message: format!("{} has no shards", self.target),
                retryable: true,
            });
        }
        self.lineage.update(listing);
        if self.ctx.resume.is_none() && self.spec.start_position == super::config::StartPosition::Latest {
            // Everything in a shard closed before a `latest` start is older than the start.
            self.state.finished.extend(self.lineage.closed_ids());
        }
        info!(kinesis = %self.target, shards = self.lineage.ids().count(), finished = self.state.finished.len(), "kinesis source ready");
        Ok(())
    }

    async fn fan_out_consumer(&self) -> Result<Option<String>, SourceError> {
        if self.spec.mode == ReadMode::Polling {
            return Ok(None);
        }
        let name = self.spec.consumer_name.clone().unwrap_or_else(|| {
            let base: String = self.ctx.name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect();
            format!("sluice-{base}").chars().take(128).collect()
        });
        match efo::ensure_consumer(&self.client, &self.stream, &name, &self.spec.retry_policy()).await {
            Ok(arn) => Ok(Some(arn)),
            Err(e) if self.spec.mode == ReadMode::Auto => {
                warn!(error = %e, "enhanced fan-out is not available; falling back to polling");
                Ok(None)
            }
            Err(e) => Err(self.remote(e, &format!("registering fan-out consumer {name}"))),
        }
    }

    fn remote(&self, e: CallError, what: &str) -> SourceError {
        let hint = match e.kind {
            ErrorKind::NotFound => "; check `stream`, `region` and `endpoint`",
            ErrorKind::Transient => "; is the endpoint reachable?",
            _ => "",
        };
        SourceError::Remote {
            source_name: self.ctx.node.clone(),
            message: format!("{what} of {}: {}{hint}", self.target, e.message),
            retryable: e.retryable(),
        }
    }

    fn closed(&self) -> SourceError {
        SourceError::Closed(self.ctx.node.clone())
    }

    pub async fn run(mut self) -> Result<(), SourceError> {
        self.schedule();
        let mut discover = tokio::time::interval(self.spec.shard_discovery_interval.0);
        discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        discover.tick().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_lag_report = Instant::now();
        loop {
            let wake = tokio::select! {
                biased;
                b = self.ctx.barriers.recv() => Wake::Barrier(b),
                Some(ev) = self.rx.recv() => Wake::Event(ev),
                _ = discover.tick() => Wake::Discover,
                _ = tick.tick() => Wake::Tick,
            };
            let flow = match wake {
                // The coordinator is gone: the pipeline is stopping.
                Wake::Barrier(None) => Flow::Stop,
                Wake::Barrier(Some(b)) => self.on_barrier(b).await?,
                Wake::Event(ShardEvent::Chunk { shard, pieces, records, millis_behind }) => {
                    self.on_chunk(&shard, pieces, records, millis_behind).await?
                }
                Wake::Event(ShardEvent::End { shard, children }) => {
                    self.on_end(&shard, children).await;
                    Flow::Continue
                }
                Wake::Event(ShardEvent::Failed { shard, error }) => {
                    return Err(self.remote(error, &format!("reading shard {shard}")));
                }
                Wake::Discover => {
                    self.discover().await;
                    Flow::Continue
                }
                Wake::Tick => {
                    self.check_idle();
                    if last_lag_report.elapsed() >= LAG_REPORT {
                        last_lag_report = Instant::now();
                        self.report_lag();
                    }
                    Flow::Continue
                }
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
        }
    }

    async fn on_barrier(&mut self, b: Barrier) -> Result<Flow, SourceError> {
        self.ctx.out.barrier(b).await.map_err(|_| self.closed())?;
        let state = self.state.to_json();
        debug!(epoch = b.epoch, shards = self.state.shards.len(), finished = self.state.finished.len(), "barrier");
        // A closed ack channel means the coordinator stopped; the barrier channel tells us next.
        let _ = self.ctx.acks.send(Ack { node: self.ctx.node.clone(), epoch: b.epoch, state: Some(state) });
        Ok(if b.last { Flow::Stop } else { Flow::Continue })
    }

    async fn on_chunk(&mut self, shard: &str, pieces: Vec<(Piece, ShardPosition)>, records: usize, millis_behind: Option<i64>) -> Result<Flow, SourceError> {
        if let Some(ms) = millis_behind {
            self.lag.insert(shard.to_string(), ms);
            crate::admin::metrics::kinesis_lag(&self.ctx.name, shard, ms);
            debug!(shard, millis_behind_latest = ms, records, "kinesis read");
        }
        if records == 0 && millis_behind.unwrap_or(0) == 0 {
            self.caught_up.insert(shard.to_string());
        } else {
            self.caught_up.remove(shard);
        }
        if records > 0 {
            self.last_data = Instant::now();
        }
        if self.exhausted {
            return Ok(Flow::Continue); // reported exhausted: positions stay where they are
        }
        for (piece, pos) in pieces {
            let stats = &self.ctx.stats;
            match piece {
                Piece::Data(batch) => {
                    let n = batch.len();
                    stats.add_in(n);
                    stats.add_out(n);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.ctx.out.send(batch).await.map_err(|_| self.closed())?;
                }
                Piece::Dead(entries) => {
                    let n = entries.len();
                    stats.add_in(n);
                    stats.add_rejected(n);
                    if self.ctx.out.dlq.is_none() {
                        tracing::error!(shard, records = n, "corrupt KPL aggregates and no DLQ edge: they are only logged");
                    }
                    let origin = Arc::new(Origin { source: self.ctx.name.clone(), partition: shard.into() });
                    self.ctx.out.dead_letters(&origin, entries).await.map_err(|_| self.closed())?;
                }
            }
            self.state.shards.insert(shard.to_string(), pos);
            // Barriers that came in meanwhile go between pieces, not after the whole chunk.
            while let Ok(b) = self.ctx.barriers.try_recv() {
                if let Flow::Stop = self.on_barrier(b).await? {
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_end(&mut self, shard: &str, children: Vec<(String, Vec<String>)>) {
        if let Some(r) = self.running.remove(shard) {
            r.task.abort(); // it returns by itself; this only makes sure
        }
        self.state.shards.remove(shard);
        self.state.finished.insert(shard.to_string());
        self.lag.remove(shard);
        crate::admin::metrics::kinesis_lag(&self.ctx.name, shard, 0);
        self.caught_up.remove(shard);
        info!(shard, children = ?children.iter().map(|c| &c.0).collect::<Vec<_>>(), "shard finished");
        let announced = !children.is_empty();
        for (child, parents) in &children {
            self.lineage.add_child(child, parents);
        }
        if !announced {
            // No ChildShards (some emulators): the listing tells.
            self.discover().await;
        }
        self.schedule();
    }

    async fn discover(&mut self) {
        match shards::list(&self.client, &self.stream).await {
            Ok(listing) if !listing.is_empty() => {
                self.lineage.update(listing);
                // Finished shards past retention are no longer needed to order their children.
                let lineage = &self.lineage;
                self.state.finished.retain(|id| lineage.contains(id));
                for (id, r) in &self.running {
                    if self.lineage.is_closed(id) && !r.closed.swap(true, Ordering::Relaxed) {
                        debug!(shard = %id, "shard is closed");
                    }
                }
                self.schedule();
            }
            Ok(_) => warn!(kinesis = %self.target, "ListShards returned no shards; keeping the known ones"),
            Err(e) => warn!(kinesis = %self.target, error = %e, "shard discovery failed; retrying at the next interval"),
        }
    }

    /// Starts every shard whose parents are all finished.
    fn schedule(&mut self) {
        if self.exhausted {
            return;
        }
        let running: BTreeSet<String> = self.running.keys().cloned().collect();
        for id in self.lineage.ready(&self.state.finished, &running) {
            self.start_reader(id);
        }
    }

    fn start_reader(&mut self, id: String) {
        let start = match self.state.shards.get(&id) {
            Some(p) => StartAt::resume(p),
            None => position::initial(&self.spec, self.state.since_ms),
        };
        let skip = match &start {
            StartAt::At { seq, skip_through } => Some((seq.clone(), *skip_through)),
            _ => None,
        };
        let origin = Arc::new(Origin { source: self.ctx.name.clone(), partition: id.as_str().into() });
        let shaper = Shaper::new(origin, self.ctx.node.clone(), self.ctx.batch.max_records, self.ctx.batch.max_bytes.0 as usize, skip);
        let closed = Arc::new(AtomicBool::new(self.lineage.is_closed(&id)));
        let r = ReaderCtx {
            source: self.ctx.name.clone(),
            client: self.client.clone(),
            stream: self.stream.clone(),
            shard: id.as_str().into(),
            start: start.clone(),
            shaper,
            tx: self.tx.clone(),
            poll_limit: self.spec.poll_limit as i32,
            poll_interval: self.spec.poll_interval.0,
            read_bytes_per_sec: self.spec.read_bytes_per_sec.0,
            retry: self.spec.retry_policy(),
            renew_after: self.spec.fan_out_renew_after.0,
            closed: closed.clone(),
        };
        let mode = if self.consumer.is_some() { "fan-out" } else { "polling" };
        info!(shard = %id, ?start, mode, "reading shard");
        let task = match &self.consumer {
            Some(arn) => tokio::spawn(efo::run(r, arn.clone())),
            None => tokio::spawn(poll::run(r)),
        };
        self.running.insert(id, Running { task, closed });
    }

    /// `stop_when_idle`: every shard caught up and nothing new for that long.
    fn check_idle(&mut self) {
        let Some(idle) = self.spec.stop_when_idle else { return };
        if self.exhausted || self.last_data.elapsed() < idle.0 {
            return;
        }
        if self.running.keys().all(|k| self.caught_up.contains(k)) {
            info!(idle_ms = idle.0.as_millis() as u64, "every shard is caught up and idle: the source is exhausted");
            self.exhausted = true;
            for r in std::mem::take(&mut self.running).into_values() {
                r.task.abort();
            }
            let _ = self.ctx.requests.send(Request::Exhausted { node: self.ctx.node.clone() });
        }
    }

    fn report_lag(&self) {
        let max = self.lag.values().copied().max().unwrap_or(0);
        let behind: Vec<_> = self.lag.iter().filter(|(_, &ms)| ms > 0).map(|(s, ms)| format!("{s}={ms}ms")).collect();
        info!(target: "sluice::kinesis::lag", max_millis_behind_latest = max, shards = self.running.len(), behind = %behind.join(","), "kinesis lag");
    }
}
