//! Shared by the Kinesis integration tests: a kinesis-local emulator per
//! test (started by tests/scripts/kinesis-local.sh), stream helpers, and a
//! harness that runs the Kinesis source with a hand-made `SourceCtx`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use aws_sdk_kinesis::types::StreamStatus;
use aws_sdk_kinesis::Client;
use sluice::batch::BatchData;
use sluice::config::units::{ByteSize, Dur};
use sluice::config::BatchSpec;
use sluice::pipeline::edge::Envelope;
use sluice::pipeline::msg::{Ack, Barrier, Msg, Request};
use sluice::source::kinesis::config::KinesisSourceSpec;
use sluice::source::{Detached, SourceCtx, SourceError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const REGION: &str = "us-east-1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Test credentials for the emulator when the environment has none; never IMDS.
pub fn test_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        }
        // Set before any client exists (the first thing every test does).
        for (k, v) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_EC2_METADATA_DISABLED", "true")] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
    });
}

/// One kinesis-local, stopped (by PID, through the script) on drop.
pub struct Emulator {
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Emulator {
    /// `None` (with the reason printed) when kinesis-local cannot be installed
    /// or started here; under CI=true that is a failure instead.
    pub fn start() -> Option<Emulator> {
        test_env();
        let dir = tempfile::tempdir().expect("temp dir");
        let script = repo_root().join("tests/scripts/kinesis-local.sh");
        let out = Command::new("bash").arg(&script).arg("start").arg(dir.path()).output();
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => return skip(&format!("kinesis-local did not start: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => return skip(&format!("cannot run {}: {e}", script.display())),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoint = stdout.lines().find_map(|l| l.strip_prefix("SLUICE_TEST_KINESIS_ENDPOINT=")).map(str::to_string);
        match endpoint {
            Some(endpoint) => Some(Emulator { endpoint, dir }),
            None => skip(&format!("kinesis-local printed no endpoint: {stdout}")),
        }
    }

    pub async fn client(&self) -> Client {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        Client::new(&conf)
    }

    pub fn spec(&self, stream: &str) -> KinesisSourceSpec {
        let mut s = KinesisSourceSpec::new(stream);
        s.region = Some(REGION.into());
        s.endpoint = Some(self.endpoint.clone());
        s.start_position = sluice::source::kinesis::config::StartPosition::TrimHorizon;
        s.poll_interval = Dur(Duration::from_millis(250));
        s.shard_discovery_interval = Dur(Duration::from_secs(2));
        s
    }

    pub fn produce_args(&self, stream: &str, file: &Path) -> sluice::produce::ProduceArgs {
        let mut a = sluice::produce::ProduceArgs::new(stream, file);
        a.endpoint = Some(self.endpoint.clone());
        a.region = Some(REGION.into());
        a
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let script = repo_root().join("tests/scripts/kinesis-local.sh");
        let _ = Command::new("bash").arg(script).arg("stop").arg(self.dir.path()).output();
    }
}

fn skip<T>(reason: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("kinesis-local is required under CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

pub async fn create_stream(client: &Client, name: &str, shards: i32) {
    client.create_stream().stream_name(name).shard_count(shards).send().await.expect("CreateStream");
    wait_active(client, name).await;
}

pub async fn wait_active(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = client.describe_stream_summary().stream_name(name).send().await.expect("DescribeStreamSummary");
        if d.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        assert!(Instant::now() < deadline, "stream {name} did not become ACTIVE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (shard id, starting hash key, ending hash key) of the open shards.
pub async fn open_shards(client: &Client, name: &str) -> Vec<(String, u128, u128)> {
    let out = client.list_shards().stream_name(name).send().await.expect("ListShards");
    out.shards()
        .iter()
        .filter(|s| s.sequence_number_range().unwrap().ending_sequence_number().is_none())
        .map(|s| {
            let h = s.hash_key_range().unwrap();
            (s.shard_id().to_string(), h.starting_hash_key().parse().unwrap(), h.ending_hash_key().parse().unwrap())
        })
        .collect()
}

/// NDJSON trips file: `{"id": "...", "v": N, ...}` per (id, v).
pub fn write_ndjson(path: &Path, rows: &[(String, u32)]) {
    let mut s = String::new();
    for (id, v) in rows {
        s.push_str(&format!("{{\"id\":\"{id}\",\"v\":{v},\"vendorId\":1,\"pad\":\"{}\"}}\n", "x".repeat(40)));
    }
    std::fs::write(path, s).unwrap();
}

/// Produces `rows` through `sluice produce` (library entry point).
pub async fn produce(emu: &Emulator, stream: &str, dir: &Path, tag: &str, rows: &[(String, u32)], aggregate: bool) -> sluice::produce::ProduceReport {
    let file = dir.join(format!("{tag}.ndjson"));
    write_ndjson(&file, rows);
    let mut args = emu.produce_args(stream, &file);
    args.aggregate = aggregate;
    args.concurrency = 2;
    let report = sluice::produce::run(args).await.expect("produce");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.sent as usize, rows.len(), "{report}");
    report
}

/// One record as the source emitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub shard: String,
    pub seq: String,
    pub sub: u32,
    pub key: Option<String>,
    pub arrival_ms: Option<i64>,
    pub doc: serde_json::Value,
}

impl Rec {
    pub fn id(&self) -> String {
        self.doc["id"].as_str().unwrap_or_default().to_string()
    }
    pub fn v(&self) -> u64 {
        self.doc["v"].as_u64().unwrap_or(u64::MAX)
    }
}

/// What arrived on the source's output, in order.
#[derive(Debug, Clone)]
pub enum Out {
    Rec(Rec),
    Barrier(Barrier),
}

/// The source running in a task, wired to channels like the runtime does.
pub struct Run {
    pub barriers: mpsc::UnboundedSender<Barrier>,
    pub acks: mpsc::UnboundedReceiver<Ack>,
    pub requests: mpsc::UnboundedReceiver<Request>,
    data: mpsc::Receiver<Envelope>,
    dlq: mpsc::Receiver<Envelope>,
    pub handle: JoinHandle<Result<(), SourceError>>,
    /// Everything received so far, in order.
    pub out: Vec<Out>,
    pub dead: Vec<serde_json::Value>,
}

pub fn start_source(spec: KinesisSourceSpec, resume: Option<serde_json::Value>, max_records: usize) -> Run {
    let batch = BatchSpec { max_records, max_bytes: ByteSize(1 << 20), channel_capacity: 8 };
    let Detached { ctx, data, dlq, barriers, acks, requests } = SourceCtx::detached("trips", batch, resume);
    let handle = tokio::spawn(sluice::source::kinesis::run(spec, ctx));
    Run { barriers, acks, requests, data, dlq, handle, out: Vec::new(), dead: Vec::new() }
}

/// Dead letters as the DLQ file gets them.
fn envelopes(letters: &[sluice::dead_letter::DeadLetter]) -> Vec<serde_json::Value> {
    let Some(b) = sluice::sink::dlq::encode(letters) else { return Vec::new() };
    let BatchData::Json(json) = &b.data else { panic!("DLQ envelopes are JSON") };
    json.iter().map(|d| serde_json::from_slice(d).unwrap()).collect()
}

impl Run {
    pub fn records(&self) -> Vec<&Rec> {
        self.out.iter().filter_map(|o| if let Out::Rec(r) = o { Some(r) } else { None }).collect()
    }

    /// Records before the first barrier of `epoch` in the output.
    pub fn records_before(&self, epoch: u64) -> Vec<&Rec> {
        let mut v = Vec::new();
        for o in &self.out {
            match o {
                Out::Rec(r) => v.push(r),
                Out::Barrier(b) if b.epoch == epoch => return v,
                Out::Barrier(_) => {}
            }
        }
        panic!("barrier {epoch} not seen");
    }

    fn take(&mut self, env: Envelope) {
        match env.msg {
            Msg::Barrier(b) => self.out.push(Out::Barrier(b)),
            Msg::DeadLetters(_) => panic!("dead letters arrive on the DLQ edge only"),
            // Shard announcements (they hold aggregate watermarks back); not under test here.
            Msg::Partitions(_) => {}
            Msg::Data(batch) => {
                let BatchData::Json(json) = &batch.data else { panic!("the kinesis source emits JSON batches") };
                assert_eq!(&*batch.origin.source, "trips");
                for (m, doc) in batch.meta.iter().zip(json.iter()) {
                    self.out.push(Out::Rec(Rec {
                        shard: batch.origin.partition.to_string(),
                        seq: m.seq.to_string(),
                        sub: m.sub,
                        key: m.key.as_ref().map(|k| k.to_string()),
                        arrival_ms: m.arrival_ms,
                        doc: serde_json::from_slice(doc).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(doc).into())),
                    }));
                }
            }
        }
    }

    /// Receives until `done(self)` holds; panics after `timeout` or if the source ends.
    pub async fn until(&mut self, timeout: Duration, what: &str, mut done: impl FnMut(&Run) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            tokio::select! {
                env = self.data.recv() => match env {
                    Some(env) => self.take(env),
                    None => panic!("the source stopped while waiting for {what}: {:?}", (&mut self.handle).await),
                },
                env = self.dlq.recv() => if let Some(Envelope { msg: Msg::DeadLetters(d), .. }) = env {
                    self.dead.extend(envelopes(&d));
                },
                _ = tokio::time::sleep_until(deadline) => panic!("timed out waiting for {what}: {} records so far", self.records().len()),
            }
        }
    }

    /// Receives whatever arrives within `d` (to prove nothing more comes).
    pub async fn drain(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            tokio::select! {
                env = self.data.recv() => match env { Some(env) => self.take(env), None => return },
                env = self.dlq.recv() => if let Some(Envelope { msg: Msg::DeadLetters(d), .. }) = env {
                    self.dead.extend(envelopes(&d));
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    pub async fn until_records(&mut self, n: usize, timeout: Duration) {
        self.until(timeout, &format!("{n} records"), |r| r.records().len() >= n).await
    }

    /// Injects a barrier and waits for it downstream and for its ack.
    pub async fn checkpoint(&mut self, epoch: u64, last: bool) -> serde_json::Value {
        self.barriers.send(Barrier { epoch, last, drained: false }).unwrap();
        self.until(Duration::from_secs(30), "the barrier", |r| r.out.iter().any(|o| matches!(o, Out::Barrier(b) if b.epoch == epoch)))
            .await;
        let ack = tokio::time::timeout(Duration::from_secs(10), self.acks.recv()).await.expect("ack in time").expect("an ack");
        assert_eq!((ack.node.as_str(), ack.epoch), ("sources.trips", epoch));
        ack.state.expect("the kinesis source reports state")
    }

    /// Stops the source like a crash: nothing more is read or acknowledged.
    pub fn kill(self) {
        self.handle.abort();
    }
}

/// Asserts every id of `expected` arrived exactly once in `recs`.
pub fn assert_exactly_once(recs: &[&Rec], expected: &[(String, u32)]) {
    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in recs {
        *seen.entry((r.id(), r.v())).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let missing: Vec<_> = expected.iter().filter(|(id, v)| !seen.contains_key(&(id.clone(), *v as u64))).take(5).collect();
    assert!(missing.is_empty(), "missing (first 5): {missing:?} of {}", expected.len());
    assert_eq!(recs.len(), expected.len());
}

/// Asserts that, per partition key, versions arrive in increasing order.
pub fn assert_per_key_order(recs: &[&Rec]) {
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for r in recs {
        let key = r.key.clone().expect("partition key");
        if let Some((v, shard)) = last.get(&key) {
            assert!(r.v() > *v, "key {key}: version {} (shard {}) after {v} (shard {shard})", r.v(), r.shard);
        }
        last.insert(key, (r.v(), r.shard.clone()));
    }
}

pub fn rows(prefix: &str, n: usize, v: u32) -> Vec<(String, u32)> {
    (0..n).map(|i| (format!("{prefix}{i:06}"), v)).collect()
}
