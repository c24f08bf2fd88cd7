//! `sluice bench-opensearch`: the OpenSearch sink against a bare bulk loop
//! with the same crate, on the same local server, and read → searchable
//! latency at a steady rate. Prints figures and ratios; asserts nothing.
//!
//! (a) bare loop: the `opensearch` crate's `bulk` API, bodies of
//!     `--bulk-records` documents built in the timed section, `--concurrency`
//!     requests in flight; (b) the sink behind a sink node, as `sluice run`
//!     drives it: pipeline-sized batches (`--batch`) sent into the node's
//!     bounded input channel, then the last barrier, timed until the node
//!     acknowledged it (every document acknowledged by OpenSearch); same
//!     bulk size and concurrency. `--repeat` rounds of both, in alternating
//!     order, each on a fresh index with the other's deleted (so neither
//!     runs beside the other's segment merges); prints each round's ratio,
//!     best vs best and the median ratio.
//! (c) latency: batches created every `--tick` at `--rate` records/s and
//!     sent into the sink node while a poller reads `_count` every 10 ms; a
//!     record's latency is from its batch's creation to the first count that
//!     includes it (documents become visible at the index refresh).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opensearch::http::transport::Transport;
use opensearch::indices::{IndicesCreateParts, IndicesDeleteParts};
use opensearch::{BulkParts, CountParts, OpenSearch};
use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::batch::{Batch, BatchData, JsonRecords, Origin, RecordMeta};
use crate::pipeline::edge::{Edge, Envelope, Outputs};
use crate::pipeline::msg::{Ack, Barrier, Msg, Request};
use crate::pipeline::sink_node::{Commit, SinkNode};
use crate::sink::{Sink, SinkError};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// OpenSearch base URL (tests/scripts/services/opensearch.sh start prints one).
    #[arg(long)]
    pub endpoint: String,
    /// Documents per throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// Records per sink `write` (the pipeline's batch size).
    #[arg(long, default_value_t = 2048)]
    pub batch: usize,
    #[arg(long, default_value_t = 1000)]
    pub bulk_records: usize,
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Write the batches one after the other (each acknowledged before the
    /// next is built), instead of through the sink node, which overlaps
    /// them: what overlapping gains.
    #[arg(long)]
    pub serial: bool,
    /// Records per second in the latency run.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Length of the latency run.
    #[arg(long, default_value = "10s")]
    pub duration: humantime::Duration,
    /// Time between two batches in the latency run (a Kinesis source emits
    /// one batch per GetRecords call, every 250 ms by default).
    #[arg(long, default_value = "100ms")]
    pub tick: humantime::Duration,
    /// The indices' refresh interval: the shipped index templates'
    /// (pipelines/opensearch/*.template.json) by default; OpenSearch's own
    /// default is 1s, which alone puts the p99 above a second.
    #[arg(long, default_value = "250ms")]
    pub refresh_interval: String,
}

type E = Box<dyn std::error::Error + Send + Sync>;

pub async fn run(args: Args) -> i32 {
    match bench(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn doc(i: usize) -> String {
    format!(
        r#"{{"vendorId":"{}","passengerCount":{},"tripDistance":{:.2},"pickupDate":"2016-01-01T{:02}:{:02}:00","fare":{:.2},"flag":"N","seq":{i}}}"#,
        1 + i % 2,
        1 + i % 6,
        (i % 1000) as f64 / 37.0,
        (i / 60) % 24,
        i % 60,
        (i % 5000) as f64 / 13.0
    )
}

fn batches(n: usize, size: usize, from: usize) -> Vec<Batch> {
    let origin = Arc::new(Origin {
        source: "sources.bench".into(),
        partition: "p0".into(),
    });
    (from..from + n)
        .step_by(size)
        .map(|start| {
            let end = (start + size).min(from + n);
            let mut j = JsonRecords::with_capacity(end - start, (end - start) * 160);
            (start..end).for_each(|i| j.push(doc(i).as_bytes()));
            Batch {
                origin: origin.clone(),
                meta: (start..end).map(|i| RecordMeta::line(i as u64)).collect(),
                data: BatchData::Json(j),
            }
        })
        .collect()
}

async fn delete_index(c: &OpenSearch, name: &str) {
    let _ = c
        .indices()
        .delete(IndicesDeleteParts::Index(&[name]))
        .send()
        .await;
}

async fn fresh_index(c: &OpenSearch, name: &str, refresh: &str) -> Result<(), E> {
    delete_index(c, name).await;
    let body = serde_json::json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": refresh}});
    let r = c
        .indices()
        .create(IndicesCreateParts::Index(name))
        .body(body)
        .send()
        .await?;
    if !r.status_code().is_success() {
        return Err(format!("cannot create index {name}: {}", r.text().await?).into());
    }
    Ok(())
}

async fn bare(c: &OpenSearch, a: &Args, index: &str) -> Result<f64, E> {
    let started = Instant::now();
    let chunks: Vec<(usize, usize)> = (0..a.records)
        .step_by(a.bulk_records)
        .map(|s| (s, (s + a.bulk_records).min(a.records)))
        .collect();
    let mut results = futures::stream::iter(chunks.into_iter().map(|(s, e)| async move {
        let mut lines: Vec<String> = Vec::with_capacity(2 * (e - s));
        for i in s..e {
            lines.push(format!(r#"{{"index":{{"_id":"b-{i}"}}}}"#));
            lines.push(doc(i));
        }
        let r = c.bulk(BulkParts::Index(index)).body(lines).send().await?;
        let v: serde_json::Value = r.json().await?;
        if v["errors"].as_bool() != Some(false) {
            return Err::<(), E>(
                format!(
                    "bulk errors: {}",
                    &v.to_string()[..300.min(v.to_string().len())]
                )
                .into(),
            );
        }
        Ok(())
    }))
    .buffer_unordered(a.concurrency);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(a.records as f64 / started.elapsed().as_secs_f64())
}

async fn sink_for(a: &Args, index: &str) -> Result<crate::sink::opensearch::OpenSearchSink, E> {
    let spec: crate::sink::opensearch::config::OpenSearchSinkSpec = toml::from_str(&format!(
        "inputs = [\"x\"]\nendpoints = [\"{}\"]\nindex = \"{index}\"\nbulk_max_records = {}\nconcurrency = {}\n",
        a.endpoint, a.bulk_records, a.concurrency
    ))?;
    let mut s = crate::sink::opensearch::build("bench", &spec)?;
    s.recover(None).await?;
    Ok(s)
}

/// A sink node around the sink, on a thread of the blocking pool as in
/// `sluice run`, fed through a bounded channel of the default capacity.
struct Node {
    tx: mpsc::Sender<Envelope>,
    acks: mpsc::UnboundedReceiver<Ack>,
    commits: mpsc::UnboundedSender<Commit>,
    dlq: mpsc::Receiver<Envelope>,
    _requests: mpsc::UnboundedReceiver<Request>,
    task: tokio::task::JoinHandle<Result<(), SinkError>>,
}

impl Node {
    fn start(sink: crate::sink::opensearch::OpenSearchSink) -> Node {
        let (tx, rx) = mpsc::channel(crate::config::BatchSpec::default().channel_capacity);
        let (dlq_tx, dlq) = mpsc::channel(1024);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (req_tx, _requests) = mpsc::unbounded_channel();
        let (commits, commit_rx) = mpsc::unbounded_channel();
        let node = SinkNode {
            node: "sinks.bench".into(),
            sink: Box::new(sink),
            inputs: 1,
            rx,
            out: Outputs {
                edges: vec![],
                dlq: Some(Edge {
                    to: "dlq".into(),
                    input: 0,
                    tx: dlq_tx,
                }),
            },
            commits: commit_rx,
            acks: ack_tx,
            requests: req_tx,
            stats: Arc::default(),
            retry: crate::retry::RetryPolicy::default(),
        };
        let rt = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || rt.block_on(node.run()));
        Node {
            tx,
            acks,
            commits,
            dlq,
            _requests,
            task,
        }
    }

    /// `Err`: the node stopped (`finish` tells why).
    async fn send(&self, batch: Batch) -> Result<(), E> {
        self.send_msg(Msg::Data(batch)).await
    }

    /// The last barrier, acknowledged once every document before it is;
    /// then the commit that lets the node end.
    async fn finish(mut self) -> Result<(), E> {
        let last = Barrier {
            epoch: 1,
            last: true,
            drained: true,
        };
        let sent = self.send_msg(Msg::Barrier(last)).await;
        match (sent, self.acks.recv().await) {
            (Ok(()), Some(ack)) => {
                let token = ack.state.unwrap_or_default();
                let _ = self.commits.send(Commit { epoch: 1, token });
            }
            _ => drop(self.commits),
        }
        self.task.await??;
        while let Ok(env) = self.dlq.try_recv() {
            if let Msg::DeadLetters(d) = env.msg {
                return Err(format!("refused: {} {}", d[0].code, d[0].message).into());
            }
        }
        Ok(())
    }

    async fn send_msg(&self, msg: Msg) -> Result<(), E> {
        self.tx
            .send(Envelope { input: 0, msg })
            .await
            .map_err(|_| E::from("the sink node stopped"))
    }
}

async fn through_sink(a: &Args, index: &str) -> Result<f64, E> {
    let input = batches(a.records, a.batch, 0);
    if a.serial {
        let mut s = sink_for(a, index).await?;
        let started = Instant::now();
        for b in &input {
            let w = s.write(b).await?;
            if !w.refused.is_empty() {
                return Err(format!("refused: {:?}", w.refused[0]).into());
            }
        }
        return Ok(a.records as f64 / started.elapsed().as_secs_f64());
    }
    let node = Node::start(sink_for(a, index).await?);
    let started = Instant::now();
    for b in input {
        if node.send(b).await.is_err() {
            break;
        }
    }
    node.finish().await?;
    Ok(a.records as f64 / started.elapsed().as_secs_f64())
}

async fn count(c: &OpenSearch, index: &str) -> Result<usize, E> {
    let v: serde_json::Value = c
        .count(CountParts::Index(&[index]))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["count"].as_u64().unwrap_or(0) as usize)
}

async fn latency(c: &OpenSearch, a: &Args, index: &str) -> Result<(Vec<Duration>, f64), E> {
    let node = Node::start(sink_for(a, index).await?);
    let tick: Duration = *a.tick;
    let per_tick = ((a.rate as f64 * tick.as_secs_f64()) as usize).max(1);
    let total = (a.rate as f64 * a.duration.as_secs_f64()) as usize;
    let created = Arc::new(std::sync::Mutex::new(Vec::<Instant>::with_capacity(total)));
    let cr = created.clone();
    let producer = tokio::spawn(async move {
        let mut next = Instant::now();
        let mut i = 0;
        while i < total {
            let n = per_tick.min(total - i);
            let b = batches(n, n, i).pop().expect("one batch");
            let now = Instant::now();
            cr.lock().expect("lock").extend(std::iter::repeat_n(now, n));
            if node.send(b).await.is_err() {
                break;
            }
            i += n;
            next += tick;
            tokio::time::sleep_until(next).await;
        }
        node
    });
    let mut lat = Vec::with_capacity(total);
    let started = Instant::now();
    while lat.len() < total {
        let n = count(c, index)
            .await?
            .min(created.lock().expect("lock").len());
        let now = Instant::now();
        let cr = created.lock().expect("lock");
        while lat.len() < n {
            lat.push(now - cr[lat.len()]);
        }
        drop(cr);
        if started.elapsed() > *a.duration + Duration::from_secs(60) {
            // The node's own error says why, if it failed.
            if producer.is_finished() {
                producer.await?.finish().await?;
            }
            return Err(
                "documents did not all become searchable within a minute of the end".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer.await?.finish().await?;
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    Ok((lat, achieved))
}

async fn bench(a: &Args) -> Result<(), E> {
    let c = OpenSearch::new(Transport::single_node(&a.endpoint)?);
    let (bare_idx, sink_idx, lat_idx) = (
        "sluice-bench-bare",
        "sluice-bench-sink",
        "sluice-bench-latency",
    );
    let (mut best_bare, mut best_sink) = (0f64, 0f64);
    let mut ratios = Vec::new();
    for round in 1..=a.repeat.max(1) {
        // Alternate which goes first, and run each with no other bench
        // index on the server: the previous run's segment merges would
        // otherwise slow whichever comes second.
        let (mut b, mut s) = (0f64, 0f64);
        for sink_turn in [round % 2 == 0, round % 2 == 1] {
            let (idx, other) = match sink_turn {
                true => (sink_idx, bare_idx),
                false => (bare_idx, sink_idx),
            };
            delete_index(&c, other).await;
            fresh_index(&c, idx, &a.refresh_interval).await?;
            match sink_turn {
                true => s = through_sink(a, idx).await?,
                false => b = bare(&c, a, idx).await?,
            }
            let _ = c
                .indices()
                .refresh(opensearch::indices::IndicesRefreshParts::Index(&[idx]))
                .send()
                .await?;
            let n = count(&c, idx).await?;
            if n != a.records {
                return Err(format!("{idx} holds {n} documents, expected {}", a.records).into());
            }
        }
        eprintln!(
            "round {round}: bare bulk loop {b:.0} docs/s, sink {s:.0} docs/s, ratio {:.2}",
            s / b
        );
        ratios.push(s / b);
        best_bare = best_bare.max(b);
        best_sink = best_sink.max(s);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "bulk indexing, {} docs, bulk {} x {} in flight, batches of {}{}: bare loop {best_bare:.0} docs/s, sink {best_sink:.0} docs/s, ratio {:.2} (best vs best; median of the rounds' ratios {:.2})",
        a.records,
        a.bulk_records,
        a.concurrency,
        a.batch,
        if a.serial { " written serially" } else { "" },
        best_sink / best_bare,
        ratios[ratios.len() / 2]
    );
    // The latency run starts without the throughput runs' merges.
    for idx in [bare_idx, sink_idx] {
        delete_index(&c, idx).await;
    }
    fresh_index(&c, lat_idx, &a.refresh_interval).await?;
    let (lat, achieved) = latency(&c, a, lat_idx).await?;
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "read → searchable at {} records/s in batches every {} (achieved {achieved:.0}/s, refresh_interval {}): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        a.rate,
        a.tick,
        a.refresh_interval,
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    for idx in [bare_idx, sink_idx, lat_idx] {
        delete_index(&c, idx).await;
    }
    Ok(())
}
