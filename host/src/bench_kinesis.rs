//! `sluice bench-kinesis`: read throughput of the Kinesis source against a
//! bare aws-sdk-kinesis GetRecords loop, on the same stream and data.
//!
//! Fills a fresh stream with taxi-like JSON (PutRecords, 500 per call,
//! concurrently), then reads it all from TRIM_HORIZON (a) with a bare loop per
//! shard, no sleeps, (b) the same loop paced like the source paces itself (the
//! per-shard limits it honours: a call per 200 ms at most, 2 MB/s), and (c) the
//! source itself (polling) with a hand-made `SourceCtx` whose output a task
//! counts. Best of `--repeat` each; prints records/s and the ratios. Meant for
//! an emulator (kinesalite: tests/scripts/kinesalite.sh); asserts nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus};
use aws_sdk_kinesis::Client;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::units::{ByteSize, Dur};
use crate::config::BatchSpec;
use crate::pipeline::edge::Envelope;
use crate::pipeline::msg::{Barrier, Msg};
use crate::source::kinesis::config::{KinesisSourceSpec, ReadMode, StartPosition};
use crate::source::{Detached, SourceCtx};

/// The per-shard limits the source's polling reader honours (poll.rs).
const PACED_SPACING: Duration = Duration::from_millis(200);
const PACED_BYTES_PER_SEC: u64 = 2 * 1024 * 1024;
const GET_LIMIT: i32 = 10_000;
const PUT_BATCH: usize = 500;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kinesis endpoint (kinesalite: tests/scripts/kinesalite.sh start).
    #[arg(long)]
    pub endpoint: String,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long, default_value_t = 4)]
    pub shards: i32,
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Size of each record (taxi JSON padded to it).
    #[arg(long, default_value_t = 300)]
    pub record_bytes: usize,
    /// Concurrent PutRecords calls while filling.
    #[arg(long, default_value_t = 8)]
    pub put_concurrency: usize,
    /// Repetitions per measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// The source's `poll_interval` in the second source run (the first uses the default, 1s).
    #[arg(long, default_value = "50ms")]
    pub low_poll_interval: humantime::Duration,
    /// Leave the stream in place afterwards.
    #[arg(long)]
    pub keep_stream: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{op}: {message}")]
    Kinesis { op: &'static str, message: String },
    #[error("{0}")]
    Other(String),
}

fn kerr<E: std::error::Error + 'static>(op: &'static str) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError::Kinesis { op, message: aws_sdk_kinesis::error::DisplayErrorContext(e).to_string() }
}

/// The command: prints the figures, returns the exit code.
pub async fn run(args: Args) -> i32 {
    match bench(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn bench(args: &Args) -> Result<(), BenchError> {
    // Emulators want some credentials; never reach for IMDS. Set before any client exists.
    for (k, v) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_EC2_METADATA_DISABLED", "true")] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let client = crate::source::kinesis::client::build(Some(args.region.clone()), Some(&args.endpoint))
        .await
        .map_err(BenchError::Other)?;
    let stream = format!("sluice-bench-{}", std::process::id() as u64 * 1000 + (rand::random::<u16>() % 1000) as u64);
    client.create_stream().stream_name(&stream).shard_count(args.shards).send().await.map_err(kerr("CreateStream"))?;
    wait_active(&client, &stream).await?;
    let result = measure(args, &client, &stream).await;
    if !args.keep_stream {
        let _ = client.delete_stream().stream_name(&stream).send().await;
    }
    result
}

async fn measure(args: &Args, client: &Client, stream: &str) -> Result<(), BenchError> {
    let t = Instant::now();
    let per_shard = fill(args, client, stream).await?;
    let secs = t.elapsed().as_secs_f64();
    let total: u64 = per_shard.values().sum();
    println!(
        "stream {stream}: {total} records of {} B in {} shards, filled in {secs:.1}s ({:.0} rec/s); per shard {:?}",
        args.record_bytes,
        per_shard.len(),
        total as f64 / secs,
        per_shard.values().collect::<Vec<_>>()
    );
    let rate = |d: Duration| total as f64 / d.as_secs_f64();

    let mut bare = Duration::MAX;
    let mut paced = Duration::MAX;
    for _ in 0..args.repeat.max(1) {
        bare = bare.min(bare_loop(client, stream, &per_shard, false).await?);
        paced = paced.min(bare_loop(client, stream, &per_shard, true).await?);
    }
    let mut normal = Duration::MAX;
    let mut low = Duration::MAX;
    let low_interval: Duration = args.low_poll_interval.into();
    for _ in 0..args.repeat.max(1) {
        normal = normal.min(source_once(args, stream, total, None).await?);
        low = low.min(source_once(args, stream, total, Some(low_interval)).await?);
    }
    println!("best of {} (records/s):", args.repeat.max(1));
    println!("  bare GetRecords loop (no sleeps)                        {:>10.0}", rate(bare));
    println!("  bare loop paced like the source (200 ms/call, 2 MB/s)   {:>10.0}", rate(paced));
    println!("  sluice source, defaults (2 MB/s per shard pacing)       {:>10.0}", rate(normal));
    println!("  sluice source, read_bytes_per_sec = 0, poll {:<8}   {:>10.0}", args.low_poll_interval.to_string(), rate(low));
    println!(
        "ratio source/bare: {:.2} (both unpaced); {:.2} (source paced at the Kinesis limit, bare not); source/paced bare: {:.2}",
        rate(low) / rate(bare),
        rate(normal) / rate(bare),
        rate(normal) / rate(paced)
    );
    Ok(())
}

async fn wait_active(client: &Client, stream: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = client.describe_stream_summary().stream_name(stream).send().await.map_err(kerr("DescribeStreamSummary"))?;
        if d.stream_description_summary().map(|s| s.stream_status()) == Some(&StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Other(format!("stream {stream} did not become ACTIVE in 30s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One taxi-like JSON document of about `bytes` bytes (padded with a field).
fn record(i: u64, bytes: usize) -> (String, Vec<u8>) {
    let opts = crate::gen::GenOptions { rows: u64::MAX, seed: 7, bad_fraction: 0.0 };
    let row = crate::gen::row(&opts, i);
    let mut doc = Vec::with_capacity(bytes + 16);
    row.write_json(&mut doc);
    let pad = ",\"pad\":\"\"}".len();
    if doc.last() == Some(&b'}') && doc.len() + pad < bytes {
        doc.pop();
        doc.extend_from_slice(b",\"pad\":\"");
        doc.resize(bytes - 2, b'x');
        doc.extend_from_slice(b"\"}");
    }
    (row.id(), doc)
}

/// PutRecords in calls of 500, `put_concurrency` at a time; retries failed
/// entries. Returns the records per shard, from the responses.
async fn fill(args: &Args, client: &Client, stream: &str) -> Result<BTreeMap<String, u64>, BenchError> {
    let calls = (0..args.records).step_by(PUT_BATCH).map(|start| {
        let end = (start + PUT_BATCH as u64).min(args.records);
        put_batch(client, stream, (start..end).map(|i| record(i, args.record_bytes)).collect())
    });
    let counts: Vec<Vec<String>> = futures::stream::iter(calls).buffer_unordered(args.put_concurrency.max(1)).try_collect().await?;
    let mut per_shard = BTreeMap::new();
    for shard in counts.into_iter().flatten() {
        *per_shard.entry(shard).or_insert(0u64) += 1;
    }
    Ok(per_shard)
}

/// Shard ids of the records put.
async fn put_batch(client: &Client, stream: &str, mut pending: Vec<(String, Vec<u8>)>) -> Result<Vec<String>, BenchError> {
    let mut shards = Vec::with_capacity(pending.len());
    for attempt in 0..20 {
        let entries: Vec<_> = pending
            .iter()
            .map(|(k, d)| PutRecordsRequestEntry::builder().partition_key(k).data(Blob::new(d.clone())).build().expect("key and data set"))
            .collect();
        let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.map_err(kerr("PutRecords"))?;
        let mut failed = Vec::new();
        for (res, rec) in out.records().iter().zip(pending) {
            match res.shard_id() {
                Some(s) if res.error_code().is_none() => shards.push(s.to_string()),
                _ => failed.push(rec),
            }
        }
        if failed.is_empty() {
            return Ok(shards);
        }
        pending = failed;
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
    }
    Err(BenchError::Other(format!("{} records still failing after 20 PutRecords attempts", pending.len())))
}

/// Every shard read concurrently from TRIM_HORIZON until its known count;
/// `paced` spaces the calls like the source's polling reader.
async fn bare_loop(client: &Client, stream: &str, per_shard: &BTreeMap<String, u64>, paced: bool) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let tasks: Vec<_> = per_shard
        .iter()
        .map(|(shard, &expect)| {
            let (client, stream, shard) = (client.clone(), stream.to_string(), shard.clone());
            tokio::spawn(async move { bare_shard(&client, &stream, &shard, expect, paced).await })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| BenchError::Other(format!("bare loop task: {e}")))??;
    }
    Ok(t.elapsed())
}

async fn bare_shard(client: &Client, stream: &str, shard: &str, expect: u64, paced: bool) -> Result<(), BenchError> {
    let out = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .map_err(kerr("GetShardIterator"))?;
    let mut iterator = out.shard_iterator().map(str::to_string);
    let (mut n, mut bytes_seen) = (0u64, 0u64);
    let mut next_call = Instant::now();
    while n < expect {
        let Some(it) = iterator.take() else {
            return Err(BenchError::Other(format!("shard {shard} ended after {n} of {expect} records")));
        };
        if paced {
            tokio::time::sleep_until(next_call).await;
        }
        let out = client.get_records().shard_iterator(it).limit(GET_LIMIT).send().await.map_err(kerr("GetRecords"))?;
        let bytes: u64 = out.records().iter().map(|r| r.data().as_ref().len() as u64).sum();
        next_call = Instant::now() + PACED_SPACING.max(Duration::from_micros(bytes * 1_000_000 / PACED_BYTES_PER_SEC));
        n += out.records().len() as u64;
        bytes_seen += bytes;
        iterator = out.next_shard_iterator().map(str::to_string);
    }
    tracing::debug!(shard, records = n, bytes = bytes_seen, "bare loop read the shard");
    Ok(())
}

/// The source reading the whole stream; the time until the last record
/// arrived downstream (its start-up, ListShards and iterators included).
async fn source_once(args: &Args, stream: &str, total: u64, poll_interval: Option<Duration>) -> Result<Duration, BenchError> {
    let mut spec = KinesisSourceSpec::new(stream);
    spec.region = Some(args.region.clone());
    spec.endpoint = Some(args.endpoint.clone());
    spec.start_position = StartPosition::TrimHorizon;
    spec.mode = ReadMode::Polling;
    spec.poll_limit = GET_LIMIT as u32;
    spec.stop_when_idle = Some(Dur(Duration::from_secs(2)));
    if let Some(p) = poll_interval {
        // The unpaced variant: the same freedom the bare loop has.
        spec.poll_interval = Dur(p);
        spec.read_bytes_per_sec = crate::config::units::ByteSize(0);
    }
    // Batches as large as a GetRecords answer, like the bare loop's.
    let batch = BatchSpec {
        max_records: GET_LIMIT as usize,
        max_bytes: ByteSize(64 << 20),
        channel_capacity: 8,
    };
    let Detached { ctx, mut data, mut dlq, barriers, acks: _acks, requests: _requests } = SourceCtx::detached("bench", batch, None);
    let t = Instant::now();
    let (done_tx, done_rx) = oneshot::channel();
    let counter = tokio::spawn(async move {
        let (mut n, mut dead, mut done_tx) = (0u64, 0u64, Some(done_tx));
        loop {
            tokio::select! {
                env = data.recv() => match env {
                    Some(Envelope { msg: Msg::Data(b), .. }) => {
                        n += b.len() as u64;
                        if n >= total {
                            if let Some(tx) = done_tx.take() { let _ = tx.send(t.elapsed()); }
                        }
                    }
                    Some(Envelope { msg: Msg::Barrier(b), .. }) if b.last => return (n, dead),
                    Some(_) => {}
                    None => return (n, dead),
                },
                Some(env) = dlq.recv() => if let Msg::DeadLetters(d) = env.msg { dead += d.len() as u64 },
            }
        }
    });
    let handle = tokio::spawn(crate::source::kinesis::run(spec, ctx));
    let elapsed = tokio::time::timeout(Duration::from_secs(600), done_rx).await;
    // The final barrier stops the source after what it already emitted.
    let _ = barriers.send(Barrier { epoch: 1, last: true, drained: false });
    let ended = tokio::time::timeout(Duration::from_secs(30), handle).await;
    let (n, dead) = counter.await.map_err(|e| BenchError::Other(format!("counter task: {e}")))?;
    match ended {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(BenchError::Other(format!("the source failed: {e}"))),
        Ok(Err(e)) => return Err(BenchError::Other(format!("the source task: {e}"))),
        Err(_) => return Err(BenchError::Other("the source did not stop within 30s of the final barrier".into())),
    }
    if n != total || dead != 0 {
        return Err(BenchError::Other(format!("the source delivered {n} records (+{dead} to the DLQ), expected {total}")));
    }
    match elapsed {
        Ok(Ok(d)) => Ok(d),
        _ => Err(BenchError::Other(format!("the source read {n} of {total} records in 600s"))),
    }
}
