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
use super::identity::{check_identity, default_consumer_name, describe};
use super::{efo, poll};
use crate::batch::Origin;
use crate::pipeline::msg::{Ack, Barrier, Request};
use crate::source::{SourceCtx, SourceError};

const EVENT_CAPACITY: usize = 16;
const LAG_REPORT: Duration = Duration::from_secs(30);
/// The longest one shard discovery may hold the emitter. Discovery runs in
/// the one task that emits every shard's records, so a ListShards that hangs
/// (a half-open connection waits for the SDK's attempt timeout) would stall
/// them all; past this it is abandoned and tried again at the next interval.
const DISCOVERY_BUDGET: Duration = Duration::from_secs(10);

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
    /// From DescribeStreamSummary (`None` where the endpoint lacks it).
    stream_arn: Option<String>,
    lag: BTreeMap<String, i64>,
    caught_up: BTreeSet<String>,
    last_data: Instant,
    exhausted: bool,
    /// Shards started / finished since the last announcement downstream;
    /// announced before the next event is handled, so before their records.
    opened: Vec<Arc<str>>,
    finished_now: Vec<Arc<str>>,
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
        let identity = match describe(&client, &stream, &spec.retry_policy()).await {
            Ok(id) => Some(id),
            // Emulators without DescribeStreamSummary: no identity to check.
            Err(e) if e.kind == ErrorKind::Unsupported => {
                warn!(kinesis = %target, "DescribeStreamSummary is not supported here: the stream's identity is not checked");
                None
            }
            Err(e) => {
                let hint = match e.kind {
                    ErrorKind::NotFound => "; check `stream`, `region` and `endpoint`",
                    ErrorKind::Transient => "; is the endpoint reachable?",
                    _ => "",
                };
                return Err(SourceError::Remote {
                    source_name: ctx.node.clone(),
                    message: format!("describing {target}: {}{hint}", e.message),
                    retryable: e.retryable(),
                });
            }
        };
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
                match &identity {
                    Some(id) => check_identity(s, id).map_err(config_err)?,
                    None => s,
                }
            }
            None => SourceState {
                v: STATE_VERSION,
                stream: stream.short_name().to_string(),
                since_ms: position::fresh_since(&spec),
                stream_arn: identity.as_ref().map(|i| i.arn.clone()),
                created_ms: identity.as_ref().and_then(|i| i.created_ms),
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
            stream_arn: identity.map(|i| i.arn),
            lag: BTreeMap::new(),
            caught_up: BTreeSet::new(),
            last_data: Instant::now(),
            exhausted: false,
            opened: Vec::new(),
            finished_now: Vec::new(),
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
        let name = self.spec.consumer_name.clone().unwrap_or_else(|| default_consumer_name(&self.ctx.pipeline, &self.ctx.name));
        let stream = self.stream_arn.clone().map_or_else(|| self.stream.clone(), StreamId::Arn);
        match efo::ensure_consumer(&self.client, &stream, &name, &self.spec.retry_policy()).await {
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
            self.announce().await?;
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
                Wake::Event(ShardEvent::Chunk { shard, pieces, records, millis_behind, advance }) => {
                    self.on_chunk(&shard, pieces, records, millis_behind, advance).await?
                }
                Wake::Event(ShardEvent::End { shard, children }) => {
                    self.on_end(&shard, children).await;
                    Flow::Continue
                }
                Wake::Event(ShardEvent::Trimmed { shard, marker }) => {
                    self.on_trimmed(&shard, marker).await?;
                    Flow::Continue
                }
                Wake::Event(ShardEvent::Gone { shard }) => {
                    self.on_gone(&shard).await?;
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

    /// Tell downstream which shards started (a reader began, after a
    /// restart too) and which finished, before any record of the started ones.
    async fn announce(&mut self) -> Result<(), SourceError> {
        let (opened, closed) = (std::mem::take(&mut self.opened), std::mem::take(&mut self.finished_now));
        crate::source::emit::partitions(&self.ctx, opened, closed).await
    }

    async fn on_barrier(&mut self, b: Barrier) -> Result<Flow, SourceError> {
        self.ctx.out.barrier(b).await.map_err(|_| self.closed())?;
        let state = self.state.to_json();
        debug!(epoch = b.epoch, shards = self.state.shards.len(), finished = self.state.finished.len(), "barrier");
        // A closed ack channel means the coordinator stopped; the barrier channel tells us next.
        let _ = self.ctx.acks.send(Ack { node: self.ctx.node.clone(), epoch: b.epoch, state: Some(state) });
        Ok(if b.last { Flow::Stop } else { Flow::Continue })
    }

    async fn on_chunk(
        &mut self,
        shard: &str,
        pieces: Vec<(Piece, ShardPosition)>,
        records: usize,
        millis_behind: Option<i64>,
        advance: Option<ShardPosition>,
    ) -> Result<Flow, SourceError> {
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
                    self.ctx.out.dead_letters(entries).await.map_err(|_| self.closed())?;
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
        // Every piece of the shard before this point is downstream.
        if let Some(p) = advance {
            let moves = self.state.shards.get(shard).is_none_or(|cur| position::cmp_seq(&p.seq, &cur.seq).is_ge());
            if moves {
                self.state.shards.insert(shard.to_string(), p);
            }
        }
        Ok(Flow::Continue)
    }

    /// The reader went on from TRIM_HORIZON: the marker goes to the DLQ and
    /// the shard's position is dropped, so a restart starts where the reader
    /// now reads (the oldest record kept) instead of failing on the old one again.
    async fn on_trimmed(&mut self, shard: &str, marker: Piece) -> Result<(), SourceError> {
        if self.exhausted {
            return Ok(());
        }
        if let Piece::Dead(entries) = marker {
            self.ctx.out.dead_letters(entries).await.map_err(|_| self.closed())?;
        }
        self.state.shards.remove(shard);
        Ok(())
    }

    /// ResourceNotFound on a read. Finished only when the listing agrees that
    /// the shard is gone (expired); the stream itself gone is an error; a shard
    /// still listed is read again from its position at the next discovery.
    async fn on_gone(&mut self, shard: &str) -> Result<(), SourceError> {
        if let Some(r) = self.running.remove(shard) {
            r.task.abort();
        }
        if self.exhausted {
            return Ok(());
        }
        match shards::list(&self.client, &self.stream).await {
            Ok(listing) if !listing.is_empty() && !listing.iter().any(|s| s.id == shard) => {
                warn!(shard, "shard expired (past the stream's retention) before it was read to its end: it is done");
                ::metrics::counter!("sluice_kinesis_expired_shards_total", "source" => self.ctx.name.to_string(), "shard" => shard.to_string())
                    .increment(1);
                self.lineage.update(listing);
                // Its children may start now: a parent missing from the listing never blocks them.
                self.state.shards.remove(shard);
                self.state.finished.remove(shard);
                self.finished_now.push(shard.into());
                self.caught_up.remove(shard);
                self.lag.remove(shard);
                self.schedule();
            }
            Ok(_) => warn!(shard, "shard not found on read but still listed; reading it again at the next discovery"),
            Err(e) if e.kind == ErrorKind::NotFound => return Err(self.remote(e, "listing shards")),
            Err(e) => warn!(shard, error = %e, "shard not found on read and the listing failed; retrying at the next discovery"),
        }
        Ok(())
    }

    async fn on_end(&mut self, shard: &str, children: Vec<(String, Vec<String>)>) {
        if self.exhausted {
            // Chunks are no longer emitted once the source reported itself
            // exhausted, so this shard's last records may not be downstream:
            // it is not finished, and a restart reads on from its position.
            return;
        }
        if let Some(r) = self.running.remove(shard) {
            r.task.abort(); // it returns by itself; this only makes sure
        }
        self.state.shards.remove(shard);
        self.state.finished.insert(shard.to_string());
        self.finished_now.push(shard.into());
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
        let listed = match tokio::time::timeout(DISCOVERY_BUDGET, shards::list(&self.client, &self.stream)).await {
            Ok(r) => r,
            Err(_) => {
                warn!(kinesis = %self.target, budget_s = DISCOVERY_BUDGET.as_secs(), "shard discovery did not answer in time; retrying at the next interval");
                return;
            }
        };
        match listed {
            Ok(listing) if !listing.is_empty() => {
                self.lineage.update(listing);
                // Finished shards past retention are no longer needed to order their children.
                let lineage = &self.lineage;
                self.state.finished.retain(|id| lineage.contains(id));
                // Positions of shards that expired before they finished: no reader
                // will ever use them (a running one reports `Gone` by itself).
                let running = &self.running;
                self.state.shards.retain(|id, _| lineage.contains(id) || running.contains_key(id));
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
        self.opened.push(origin.partition.clone());
        let range = if self.spec.kpl_hash_range_filter { self.lineage.get(&id).and_then(|s| s.hash_range) } else { None };
        let shaper = Shaper::new(origin, self.ctx.node.clone(), self.ctx.batch.max_records, self.ctx.batch.max_bytes.0 as usize, skip)
            .with_hash_range(range);
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
            idle_timeout: self.spec.fan_out_idle_timeout.0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::ByteSize;
    use aws_sdk_kinesis::types::Record;
    use aws_smithy_types::Blob;

    /// A merge task with no reader running and an endpoint nothing listens on
    /// (the paths tested here make no call), plus the receiving ends.
    async fn merge() -> (Merge, crate::source::Detached) {
        let batch = crate::config::BatchSpec { max_records: 100, max_bytes: ByteSize(1 << 20), channel_capacity: 8 };
        let mut d = crate::source::SourceCtx::detached("k", batch, None);
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        // The Detached keeps the receiving ends; the merge takes the context.
        let ctx = std::mem::replace(&mut d.ctx, crate::source::SourceCtx::detached("unused", batch, None).ctx);
        let client = client::build(Some("us-east-1".into()), Some("http://127.0.0.1:9")).await.unwrap();
        let m = Merge {
            spec: KinesisSourceSpec::new("s"),
            ctx,
            client,
            stream: StreamId::parse("s"),
            target: "stream s".into(),
            state: SourceState { v: STATE_VERSION, stream: "s".into(), ..Default::default() },
            lineage: Lineage::default(),
            running: BTreeMap::new(),
            tx,
            rx,
            consumer: None,
            stream_arn: None,
            lag: BTreeMap::new(),
            caught_up: BTreeSet::new(),
            last_data: Instant::now(),
            exhausted: false,
            opened: Vec::new(),
            finished_now: Vec::new(),
        };
        (m, d)
    }

    fn chunk(shard: &str, seqs: &[&str]) -> Vec<(Piece, ShardPosition)> {
        let origin = Arc::new(Origin { source: "k".into(), partition: shard.into() });
        let records: Vec<Record> =
            seqs.iter().map(|s| Record::builder().sequence_number(*s).partition_key("p").data(Blob::new("{}")).build().unwrap()).collect();
        Shaper::new(origin, "sources.k".into(), 100, 1 << 20, None).shape(&records)
    }

    fn received(d: &mut crate::source::Detached) -> usize {
        let mut n = 0;
        while let Ok(env) = d.data.try_recv() {
            if let crate::pipeline::msg::Msg::Data(b) = env.msg {
                n += b.len();
            }
        }
        n
    }

    /// Issue 8, item 3. A reader reports its shard's last chunk and then End;
    /// both can still be queued when the source reports itself exhausted
    /// (`stop_when_idle`), after which chunks are no longer emitted. The End
    /// must not mark the shard finished: a checkpoint would then record a
    /// finished shard whose last records never went downstream.
    #[tokio::test]
    async fn end_after_exhaustion_does_not_finish_a_shard_whose_last_chunk_was_held_back() {
        let (mut m, mut d) = merge().await;
        m.state.shards.insert("s0".into(), ShardPosition::after("5"));
        m.exhausted = true;
        let children = vec![("s1".to_string(), vec!["s0".to_string()])];
        m.on_chunk("s0", chunk("s0", &["7", "8"]), 2, Some(0), None).await.unwrap();
        m.on_end("s0", children.clone()).await;
        assert_eq!(received(&mut d), 0, "nothing is emitted after exhaustion");
        assert!(!m.state.finished.contains("s0"), "held-back records would be lost: {:?}", m.state);
        assert_eq!(m.state.shards["s0"], ShardPosition::after("5"), "a restart reads on from the last emitted record");

        // Not exhausted: the same events emit the records and finish the shard.
        let (mut m, mut d) = merge().await;
        m.on_chunk("s0", chunk("s0", &["7", "8"]), 2, Some(0), None).await.unwrap();
        m.on_end("s0", children).await;
        assert_eq!(received(&mut d), 2);
        assert!(m.state.finished.contains("s0") && !m.state.shards.contains_key("s0"));
    }

    /// Issue 8, item 1: a fan-out event's ContinuationSequenceNumber moves a
    /// quiet shard's position (an empty event), never backwards.
    #[tokio::test]
    async fn continuation_moves_a_quiet_shards_position() {
        let (mut m, _d) = merge().await;
        m.on_chunk("s0", vec![], 0, Some(0), Some(ShardPosition::after("90"))).await.unwrap();
        assert_eq!(m.state.shards["s0"], ShardPosition::after("90"), "a shard that never had a record has a position");
        m.on_chunk("s0", vec![], 0, Some(0), Some(ShardPosition::after("100"))).await.unwrap();
        assert_eq!(m.state.shards["s0"].seq, "100");
        m.on_chunk("s0", vec![], 0, Some(0), Some(ShardPosition::after("99"))).await.unwrap();
        assert_eq!(m.state.shards["s0"].seq, "100", "never backwards");
    }

    /// Issue 8, item 1: the trim marker goes to the DLQ and the position that
    /// the service refused is dropped (a restart must not fail on it again).
    #[tokio::test]
    async fn trimmed_position_is_dropped_and_reported_in_the_dlq() {
        let (mut m, mut d) = merge().await;
        m.state.shards.insert("s0".into(), ShardPosition::after("5"));
        let origin = Arc::new(Origin { source: "k".into(), partition: "s0".into() });
        let marker = Shaper::new(origin, "sources.k".into(), 10, 1 << 20, None).marker(super::super::reader::TRIMMED, "gone", "5");
        m.on_trimmed("s0", marker).await.unwrap();
        assert!(!m.state.shards.contains_key("s0"));
        let env = d.dlq.try_recv().expect("a dead letter");
        let crate::pipeline::msg::Msg::DeadLetters(d) = env.msg else { panic!("dead letters expected") };
        assert_eq!((d[0].code.as_str(), d[0].meta.seq.as_str(), &*d[0].origin.partition), ("kinesis_trimmed", "5", "s0"));
    }
}
