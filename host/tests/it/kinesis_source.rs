//! The Kinesis source against kinesis-local: exactly once with metadata,
//! resharding with per-key order (polling and fan-out), KPL aggregates,
//! restart from a checkpoint, bounded runs.


use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sluice::source::kinesis::config::{ReadMode, StartPosition};
use sluice::source::kinesis::position::SourceState;
use crate::support::*;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_reads_every_record_once_with_metadata() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "plain", 4).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 2000, 0);
    produce(&emu, "plain", dir.path(), "all", &expected, false).await;

    let mut run = start_source(emu.spec("plain"), None, 300);
    run.until_records(expected.len(), T).await;
    // The barrier's state names the last record emitted per shard (checked below).
    let state = SourceState::from_json(&run.checkpoint(1, true).await).unwrap();
    let recs = run.records();
    assert_exactly_once(&recs, &expected);

    let shards: BTreeSet<_> = open_shards(&client, "plain").await.into_iter().map(|s| s.0).collect();
    let mut per_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &recs {
        assert!(shards.contains(&r.shard), "unknown shard {}", r.shard);
        assert_eq!(r.key.as_deref(), Some(r.id().as_str()), "partition key = trip id");
        assert_eq!(r.sub, 0);
        assert!(r.arrival_ms.is_some_and(|t| t > 1_600_000_000_000), "arrival time");
        per_shard.entry(&r.shard).or_default().push(&r.seq);
    }
    assert_eq!(per_shard.len(), 4, "records spread over the 4 shards");
    for seqs in per_shard.values() {
        let mut sorted = seqs.clone();
        sorted.sort_by(|a, b| sluice::source::kinesis::position::cmp_seq(a, b));
        assert_eq!(&sorted, seqs, "sequence order within a shard");
    }
    assert_eq!(state.shards.len(), 4);
    for (shard, seqs) in per_shard {
        assert_eq!(state.shards[shard].seq, *seqs.last().unwrap());
        assert!(state.shards[shard].whole);
    }
    drop(recs);
    run.handle.await.unwrap().expect("stops cleanly after the last barrier");
}

/// Produces 6 versions of each key, splitting one shard after version 1 and
/// merging two others after version 3, while the source reads.
async fn reshard_while_reading(mode: ReadMode, stream: &str) {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = emu.spec(stream);
    spec.mode = mode;
    spec.consumer_name = Some(format!("test-{stream}"));
    let mut run = start_source(spec, None, 200);
    let mut expected = Vec::new();
    for v in 0..6u32 {
        let batch = rows("key", 300, v);
        produce(&emu, stream, dir.path(), &format!("v{v}"), &batch, false).await;
        expected.extend(batch);
        match v {
            1 => {
                let shards = open_shards(&client, stream).await;
                let (id, a, b) = &shards[0];
                let mid = a + (b - a) / 2;
                client.split_shard().stream_name(stream).shard_to_split(id).new_starting_hash_key(mid.to_string()).send().await.unwrap();
                wait_active(&client, stream).await;
            }
            3 => {
                let mut shards = open_shards(&client, stream).await;
                shards.sort_by_key(|s| s.1);
                // Two adjacent shards among the original ones (not the split's children).
                let pair = shards.windows(2).find(|w| w[0].2 + 1 == w[1].1 && !w[0].0.ends_with("04") && !w[1].0.ends_with("05")).unwrap();
                client
                    .merge_shards()
                    .stream_name(stream)
                    .shard_to_merge(&pair[0].0)
                    .adjacent_shard_to_merge(&pair[1].0)
                    .send()
                    .await
                    .unwrap();
                wait_active(&client, stream).await;
            }
            _ => {}
        }
    }
    run.until_records(expected.len(), T).await;
    // Nothing more arrives (no duplicates later either).
    run.drain(Duration::from_secs(3)).await;
    let recs = run.records();
    assert_exactly_once(&recs, &expected);
    assert_per_key_order(&recs);
    let shards: BTreeSet<_> = recs.iter().map(|r| r.shard.as_str()).collect();
    assert!(shards.len() >= 7, "children were read too: {shards:?}");
    let state = SourceState::from_json(&run.checkpoint(1, true).await).unwrap();
    assert_eq!(state.finished.len(), 3, "the split parent and both merge parents are finished: {state:?}");
    for f in &state.finished {
        assert!(!state.shards.contains_key(f));
    }
    run.handle.await.unwrap().expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_keeps_per_key_order_polling() {
    reshard_while_reading(ReadMode::Polling, "reshard-poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_keeps_per_key_order_fan_out() {
    reshard_while_reading(ReadMode::Efo, "reshard-efo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_records_match_plain_ones_and_corrupt_ones_go_to_the_dlq() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "agg", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 1500, 0);
    let report = produce(&emu, "agg", dir.path(), "agg", &expected, true).await;
    assert!(report.kinesis_records < 200, "aggregated into few Kinesis records: {report}");
    // A corrupt aggregate: the magic bytes, then garbage.
    let mut bad = vec![0xF3, 0x89, 0x9A, 0xC2];
    bad.extend_from_slice(&[7u8; 40]);
    client.put_record().stream_name("agg").partition_key("bad").data(aws_smithy_types::Blob::new(bad)).send().await.unwrap();

    let mut run = start_source(emu.spec("agg"), None, 500);
    run.until(T, "all records and the dead letter", |r| r.records().len() >= expected.len() && !r.dead.is_empty()).await;
    let recs = run.records();
    assert_exactly_once(&recs, &expected);
    assert!(recs.iter().any(|r| r.sub > 0), "sub-sequence numbers of de-aggregated records");
    for r in &recs {
        assert_eq!(r.key.as_deref(), Some(r.id().as_str()), "each sub-record keeps its own partition key");
    }
    // (seq, sub) identifies each record.
    let ids: BTreeSet<_> = recs.iter().map(|r| (r.shard.clone(), r.seq.clone(), r.sub)).collect();
    assert_eq!(ids.len(), recs.len());
    assert_eq!(run.dead.len(), 1);
    assert_eq!(run.dead[0]["code"], "kpl_corrupt");
    assert_eq!(run.dead[0]["stage"], "sources.trips");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_a_checkpoint_reads_nothing_twice() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "restart", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = rows("p", 900, 0);
    produce(&emu, "restart", dir.path(), "plain", &plain, false).await;
    // Aggregates too, small ones so each shard has several.
    let packed = rows("a", 900, 1);
    let file = dir.path().join("packed.ndjson");
    write_ndjson(&file, &packed);
    let mut args = emu.produce_args("restart", &file);
    args.aggregate = true;
    args.aggregate_max_bytes = 4096;
    let report = sluice::produce::run(args).await.unwrap();
    assert!(report.success() && report.kinesis_records > 20, "{report}");
    let all: Vec<_> = plain.iter().chain(&packed).cloned().collect();

    let mut first = start_source(emu.spec("restart"), None, 7);
    // Checkpoint every ~50 records until a barrier falls inside an aggregate
    // (batches of 7 out of aggregates of about 40), the hardest resume point.
    let mut epoch = 0;
    let state = loop {
        epoch += 1;
        let n = first.records().len();
        first.until_records(n + 50, T).await;
        let state = first.checkpoint(epoch, false).await;
        let parsed = SourceState::from_json(&state).unwrap();
        if parsed.shards.values().any(|p| !p.whole && p.sub > 0) {
            break state;
        }
        assert!(epoch < 30, "no barrier fell inside an aggregate: {parsed:?}");
    };
    // Read on past the checkpoint: these are not covered by it.
    let covered: Vec<Rec> = first.records_before(epoch).into_iter().cloned().collect();
    let n = first.records().len();
    first.until_records((n + 100).min(all.len()), T).await;
    first.kill();

    let mut second = start_source(emu.spec("restart"), Some(state), 7);
    let remaining = all.len() - covered.len();
    second.until_records(remaining, T).await;
    second.drain(Duration::from_secs(2)).await;
    let again = second.records();
    let before: BTreeSet<_> = covered.iter().map(|r| (r.id(), r.v())).collect();
    let twice: Vec<_> = again.iter().filter(|r| before.contains(&(r.id(), r.v()))).take(5).collect();
    assert!(twice.is_empty(), "read again after the checkpoint: {twice:?}");
    let mut union: Vec<&Rec> = covered.iter().collect();
    union.extend(again.iter().copied());
    assert_exactly_once(&union, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_at_the_start() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "latest", 2).await;
    let dir = tempfile::tempdir().unwrap();
    produce(&emu, "latest", dir.path(), "old", &rows("old", 100, 0), false).await;
    // Older than the clock-skew margin of a `latest` start.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut spec = emu.spec("latest");
    spec.start_position = StartPosition::Latest;
    let mut run = start_source(spec, None, 100);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh = rows("new", 200, 1);
    produce(&emu, "latest", dir.path(), "new", &fresh, false).await;
    run.until_records(fresh.len(), T).await;
    run.drain(Duration::from_secs(2)).await;
    assert_exactly_once(&run.records(), &fresh);
    let state = run.checkpoint(1, true).await;
    assert!(state["since_ms"].is_i64(), "a latest start is pinned in the state: {state}");
    run.handle.await.unwrap().expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_bounded_runs_report_exhaustion_then_stop() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "idle", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 300, 0);
    produce(&emu, "idle", dir.path(), "all", &expected, false).await;
    let mut spec = emu.spec("idle");
    spec.stop_when_idle = Some(sluice::config::units::Dur(Duration::from_secs(2)));
    let mut run = start_source(spec, None, 100);
    run.until_records(expected.len(), T).await;
    // Idle: the source says it is exhausted, keeps answering barriers, stops at the last one.
    let req = tokio::time::timeout(Duration::from_secs(30), run.requests.recv()).await.expect("exhausted in time").unwrap();
    assert!(matches!(req, sluice::pipeline::msg::Request::Exhausted { ref node } if node == "sources.trips"), "{req:?}");
    let mid = SourceState::from_json(&run.checkpoint(1, false).await).unwrap();
    let last = SourceState::from_json(&run.checkpoint(2, true).await).unwrap();
    assert_eq!(mid, last);
    assert_exactly_once(&run.records(), &expected);
    run.handle.await.unwrap().expect("clean stop");
}
