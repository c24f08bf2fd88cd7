//! `sluice produce`: put a CSV/NDJSON file of trips into a Kinesis stream —
//! the seed's KPL producer done right.
//!
//! Flow: a blocking reader thread (`input`) → this task, which paces
//! (`--rate`), optionally packs KPL aggregates per target shard (`shardmap`,
//! `kpl`) and fills PutRecords calls (`put::Batcher`) → up to `--concurrency`
//! calls in flight, each retrying only its rejected entries (`put::put`).
//! Ctrl-C stops reading, sends what was read, drains in-flight calls and
//! reports. Records that finally failed go to the failure file.

pub mod input;
pub mod progress;
pub mod put;
pub mod shardmap;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::retry::RetryPolicy;
use crate::source::kinesis::client::{self, ErrorKind, StreamId};
use crate::source::kinesis::kpl::Aggregator;
use input::{InputFormat, Item};
use progress::{Counters, Progress};
use put::{Batcher, Entry, Outcome};
use shardmap::ShardMap;

#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// Stream name or ARN.
    #[arg(long)]
    pub stream: String,
    /// Input file: CSV with a header, or NDJSON.
    #[arg(long)]
    pub file: PathBuf,
    /// Input format (default: from the extension; `.csv` is CSV, anything else NDJSON).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Records per second, e.g. `500` or `500/s` (default: as fast as the stream takes them).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// PutRecords calls in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Pack records into KPL aggregated records (the source de-aggregates them).
    #[arg(long)]
    pub aggregate: bool,
    /// Largest aggregated record in bytes (capped at the 1 MiB record limit).
    #[arg(long, default_value_t = 50 * 1024)]
    pub aggregate_max_bytes: usize,
    /// Endpoint override (LocalStack, kinesis-local).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// AWS region (default: the AWS chain; us-east-1 with --endpoint).
    #[arg(long)]
    pub region: Option<String>,
    /// Where records that finally failed are written, one per line
    /// (default: <file>.failed.ndjson, only when some failed).
    #[arg(long)]
    pub failures: Option<PathBuf>,
    /// Attempts per record, the first included.
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// No progress display.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let n = s.trim().trim_end_matches("/s").trim();
    n.parse::<u64>().ok().filter(|&r| r > 0).ok_or_else(|| format!("invalid rate {s:?}: write records per second, e.g. 500 or 500/s"))
}

impl ProduceArgs {
    /// Arguments with defaults, for tests and programmatic use.
    pub fn new(stream: impl Into<String>, file: impl Into<PathBuf>) -> Self {
        Self {
            stream: stream.into(),
            file: file.into(),
            format: None,
            rate: None,
            concurrency: 4,
            aggregate: false,
            aggregate_max_bytes: 50 * 1024,
            endpoint: None,
            region: None,
            failures: None,
            max_attempts: 8,
            limit: None,
            no_progress: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{0}")]
    Config(String),
    #[error("input {path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("{message}")]
    Stream { message: String },
    #[error("cannot write the failure file {path}: {message}")]
    FailureFile { path: PathBuf, message: String },
}

/// The summary printed at the end; `failed > 0` means exit non-zero.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProduceReport {
    /// User records read from the file.
    pub read: u64,
    /// User records Kinesis accepted.
    pub sent: u64,
    /// User records sent again after a rejection or a failed call.
    pub retried: u64,
    /// User records that finally failed (written to `failures_file`).
    pub failed: u64,
    /// Kinesis records put (aggregates count once).
    pub kinesis_records: u64,
    pub put_calls: u64,
    pub elapsed_ms: u64,
    /// Stopped by Ctrl-C before the end of the file.
    pub interrupted: bool,
    pub failures_file: Option<PathBuf>,
}

impl ProduceReport {
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

impl std::fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed_ms as f64 / 1000.0;
        write!(
            f,
            "sent {}, retried {}, failed {} ({} read, {} Kinesis records in {} PutRecords calls, {:.1} s, {:.0} rec/s)",
            self.sent,
            self.retried,
            self.failed,
            self.read,
            self.kinesis_records,
            self.put_calls,
            secs,
            self.sent as f64 / secs.max(0.001)
        )?;
        if self.interrupted {
            f.write_str(", interrupted")?;
        }
        if let Some(p) = &self.failures_file {
            write!(f, "; failed records in {}", p.display())?;
        }
        Ok(())
    }
}

const FLUSH_EVERY: Duration = Duration::from_millis(200);

pub async fn run(args: ProduceArgs) -> Result<ProduceReport, ProduceError> {
    if args.concurrency == 0 {
        return Err(ProduceError::Config("--concurrency must be at least 1".into()));
    }
    let total_bytes = std::fs::metadata(&args.file)
        .map_err(|e| ProduceError::Input { path: args.file.clone(), message: e.to_string() })?
        .len();
    let format = args.format.unwrap_or_else(|| InputFormat::from_path(&args.file));
    let client = client::build(args.region.clone(), args.endpoint.as_deref()).await.map_err(ProduceError::Config)?;
    let stream = StreamId::parse(&args.stream);
    let policy = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(5), args.max_attempts.max(1), Some(Duration::from_secs(120)));
    check_stream(&client, &stream, args.endpoint.as_deref(), &policy).await?;
    let shard_map = if args.aggregate {
        ShardMap::load(&client, &stream).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list shards; aggregating without grouping by shard");
            ShardMap::default()
        })
    } else {
        ShardMap::default()
    };

    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let (tx, mut rx) = mpsc::channel::<Item>(1024);
    let reader = {
        let (path, limit, bytes) = (args.file.clone(), args.limit, counters.bytes_read.clone());
        tokio::task::spawn_blocking(move || input::read_into(&path, format, limit, bytes, tx))
    };
    let mut d = Dispatcher {
        client,
        stream,
        policy,
        slots: Arc::new(Semaphore::new(args.concurrency)),
        tasks: JoinSet::new(),
        batcher: Batcher::new(args.rate.map_or(put::MAX_ENTRIES, |r| (r / 5).max(1) as usize)),
        counters: counters.clone(),
        failed: Vec::new(),
        report: ProduceReport::default(),
    };
    let mut aggs: Vec<(Aggregator, Vec<Vec<u8>>)> =
        (0..shard_map.len()).map(|_| (Aggregator::new(args.aggregate_max_bytes), Vec::new())).collect();
    let mut progress = Progress::new(total_bytes, args.no_progress);
    let mut flush = tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut read = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                // Stop reading (the reader's next send fails); records already taken are still sent.
                d.report.interrupted = true;
                eprintln!("produce: interrupted; sending what was read and draining in-flight calls");
                break;
            }
            item = rx.recv() => {
                let Some(item) = item else { break };
                read += 1;
                counters.read.store(read, Relaxed);
                if let Some(rate) = args.rate {
                    let due = started + Duration::from_secs_f64(read as f64 / rate as f64);
                    if due > Instant::now() + Duration::from_millis(2) {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                if args.aggregate {
                    let (agg, items) = &mut aggs[shard_map.shard_of(&item.key)];
                    if !agg.push(&item.key, &item.data) {
                        d.add(packed(agg, items)).await;
                        agg.push(&item.key, &item.data);
                    }
                    items.push(item.data);
                } else {
                    d.add(Entry { key: item.key, data: item.data, packed: Vec::new() }).await;
                }
            }
            _ = flush.tick() => {
                for (agg, items) in aggs.iter_mut().filter(|(a, _)| !a.is_empty()) {
                    d.add(packed(agg, items)).await;
                }
                d.flush().await;
                progress.update(&counters, started);
            }
            Some(done) = d.tasks.join_next() => d.record(done),
        }
    }
    drop(rx);
    for (agg, items) in aggs.iter_mut().filter(|(a, _)| !a.is_empty()) {
        d.add(packed(agg, items)).await;
    }
    d.flush().await;
    while let Some(done) = d.tasks.join_next().await {
        d.record(done);
        progress.update(&counters, started);
    }
    progress.finish();
    let input_result = reader.await.map_err(|e| ProduceError::Input { path: args.file.clone(), message: e.to_string() })?;

    let mut report = d.report;
    report.read = read;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if !d.failed.is_empty() {
        let path = args.failures.clone().unwrap_or_else(|| {
            let mut p = args.file.clone().into_os_string();
            p.push(".failed.ndjson");
            p.into()
        });
        write_failures(&path, &d.failed)?;
        report.failures_file = Some(path);
    }
    if let Err(message) = input_result {
        return Err(ProduceError::Input { path: args.file.clone(), message: format!("{message} (after {report})") });
    }
    Ok(report)
}

/// The aggregate so far as an entry, keeping its user records for the failure file.
fn packed(agg: &mut Aggregator, items: &mut Vec<Vec<u8>>) -> Entry {
    let p = agg.finish().expect("called on a non-empty aggregator");
    let users = std::mem::take(items);
    Entry { key: p.partition_key, data: p.data, packed: if p.count > 1 { users } else { Vec::new() } }
}

/// PutRecords calls in flight and their results.
struct Dispatcher {
    client: aws_sdk_kinesis::Client,
    stream: StreamId,
    policy: RetryPolicy,
    slots: Arc<Semaphore>,
    tasks: JoinSet<Outcome>,
    batcher: Batcher,
    counters: Arc<Counters>,
    failed: Vec<Entry>,
    report: ProduceReport,
}

impl Dispatcher {
    async fn add(&mut self, e: Entry) {
        if let Some(batch) = self.batcher.push(e) {
            self.send(batch).await;
        }
    }

    async fn flush(&mut self) {
        if let Some(batch) = self.batcher.take() {
            self.send(batch).await;
        }
    }

    /// Waits for a free slot (the backpressure on reading), then starts the call.
    async fn send(&mut self, batch: Vec<Entry>) {
        let permit = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (client, stream, policy) = (self.client.clone(), self.stream.clone(), self.policy);
        self.tasks.spawn(async move {
            let out = put::put(&client, &stream, batch, &policy).await;
            drop(permit);
            out
        });
    }

    fn record(&mut self, done: Result<Outcome, tokio::task::JoinError>) {
        let o = match done {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "a PutRecords task failed");
                return;
            }
        };
        let failed: u64 = o.failed.iter().map(|e| e.count() as u64).sum();
        if failed > 0 {
            tracing::warn!(records = failed, error = ?o.last_error, "records failed after retries");
        }
        self.counters.sent.fetch_add(o.sent, Relaxed);
        self.counters.retried.fetch_add(o.retried, Relaxed);
        self.counters.failed.fetch_add(failed, Relaxed);
        self.report.sent += o.sent;
        self.report.retried += o.retried;
        self.report.failed += failed;
        self.report.kinesis_records += o.records;
        self.report.put_calls += o.calls;
        self.failed.extend(o.failed);
    }
}

/// Fails early, with a clear message, when the stream is missing or the endpoint unreachable.
async fn check_stream(client: &aws_sdk_kinesis::Client, stream: &StreamId, endpoint: Option<&str>, policy: &RetryPolicy) -> Result<(), ProduceError> {
    let at = endpoint.unwrap_or("the AWS endpoint");
    let region = client.config().region().map(|r| r.to_string()).unwrap_or_default();
    let res = crate::source::kinesis::identity::describe(client, stream, policy).await;
    match res {
        Ok(id) => {
            let status = id.status;
            if status != "ACTIVE" && status != "UPDATING" {
                tracing::warn!(%stream, %status, "stream is not ACTIVE; puts may fail");
            }
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::NotFound => Err(ProduceError::Stream {
            message: format!("stream {stream} does not exist at {at} (region {region}); create it or fix --stream/--region/--endpoint"),
        }),
        Err(e) if e.kind == ErrorKind::Transient => {
            Err(ProduceError::Stream { message: format!("cannot reach Kinesis at {at} (region {region}): {}", e.message) })
        }
        Err(e) => Err(ProduceError::Stream { message: format!("stream {stream} at {at} (region {region}): {}", e.message) }),
    }
}

fn write_failures(path: &std::path::Path, failed: &[Entry]) -> Result<(), ProduceError> {
    let err = |e: std::io::Error| ProduceError::FailureFile { path: path.to_path_buf(), message: e.to_string() };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for e in failed {
        for r in e.user_records() {
            f.write_all(r).map_err(err)?;
            f.write_all(b"\n").map_err(err)?;
        }
    }
    f.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500"), Ok(500));
        assert_eq!(parse_rate("500/s"), Ok(500));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
