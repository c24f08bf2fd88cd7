//! The Kinesis source under behaviours of Amazon Kinesis that the emulators
//! never show, injected by a proxy in front of kinesis-local
//! (`it/chaos.rs`). Each test names the real behaviour it stands
//! for, from the Kinesis Data Streams API reference (error lists of
//! GetShardIterator, GetRecords, ListShards and SubscribeToShard).


use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use crate::chaos::{self, Action, Call};
use sluice::config::units::Dur;
use sluice::retry::RetryPolicy;
use sluice::source::kinesis::config::{ReadMode, StartPosition};
use sluice::source::kinesis::position::SourceState;
use crate::support::*;

const T: Duration = Duration::from_secs(120);
const SHARD0: &str = "shardId-000000000000";
const SHARD1: &str = "shardId-000000000001";

fn quick_retry() -> Option<RetryPolicy> {
    Some(RetryPolicy::new(Duration::from_millis(50), Duration::from_millis(200), 3, Some(Duration::from_secs(5))))
}

/// Sequence numbers of a shard's records, oldest first (straight from the emulator).
async fn sequences(emu: &Emulator, stream: &str, shard: &str) -> Vec<String> {
    let client = emu.client().await;
    let it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let out = client.get_records().shard_iterator(it.shard_iterator().unwrap()).limit(10_000).send().await.unwrap();
    out.records().iter().map(|r| r.sequence_number().to_string()).collect()
}

fn starting_type<'a>(c: &'a Call) -> &'a str {
    match c.op {
        "GetShardIterator" => c.body["ShardIteratorType"].as_str().unwrap_or(""),
        "SubscribeToShard" => c.body["StartingPosition"]["Type"].as_str().unwrap_or(""),
        _ => "",
    }
}

/// Stands for: a checkpointed position older than the stream's retention.
/// GetShardIterator / SubscribeToShard with AFTER_SEQUENCE_NUMBER of a
/// trimmed record answer InvalidArgumentException (API reference: "A
/// specified parameter exceeds its restrictions, is not supported, or can't
/// be used"). Before: classified fatal, so every restart failed on the same
/// checkpoint. Now: TRIM_HORIZON, a `kinesis_trimmed` dead letter, and the
/// position moves on with what is read.
async fn trimmed_position_resumes_at_trim_horizon(mode: ReadMode, stream: &str) {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, stream, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 200, 0);
    produce(&emu, stream, dir.path(), "all", &expected, false).await;
    let seqs = sequences(&emu, stream, SHARD0).await;
    let proxy = chaos::start_with(
        &emu.endpoint,
        Arc::new(|c: &Call| match (c.op, starting_type(c)) {
            // Only the first: later fan-out renewals resume from positions read since.
            ("GetShardIterator", "AFTER_SEQUENCE_NUMBER") | ("SubscribeToShard", "AFTER_SEQUENCE_NUMBER") if c.n == 0 => Action::Fail(
                400,
                "InvalidArgumentException",
                "StartingSequenceNumber is past the trim horizon of the shard (injected)",
            ),
            _ => Action::Forward,
        }),
    )
    .await;
    let mut spec = emu.spec(stream);
    spec.endpoint = Some(proxy.endpoint.clone());
    spec.mode = mode;
    // The checkpoint points at the stream's first record, "trimmed" by the proxy.
    let state = serde_json::json!({"v": 1, "stream": stream, "shards": {SHARD0: {"seq": seqs[0]}}, "finished": []});
    let mut run = start_source(spec, Some(state), 100);
    run.until(T, "records and the trim marker", |r| r.records().len() >= expected.len() && !r.dead.is_empty()).await;
    // TRIM_HORIZON: the emulator still holds the record the real service would have dropped.
    assert_exactly_once(&run.records(), &expected);
    assert_eq!(run.dead.len(), 1, "{:?}", run.dead);
    let marker = &run.dead[0];
    assert_eq!((marker["code"].as_str(), marker["partition"].as_str()), (Some("kinesis_trimmed"), Some(SHARD0)));
    assert_eq!(marker["seq"].as_str(), Some(seqs[0].as_str()));
    assert!(marker["message"].as_str().unwrap().contains("trim horizon"), "{marker}");
    let state = SourceState::from_json(&run.checkpoint(1, true).await).unwrap();
    assert_eq!(state.shards[SHARD0].seq, *seqs.last().unwrap(), "the position moved on: a restart does not hit the trimmed one");
    assert_eq!(proxy.faults(if mode == ReadMode::Efo { "SubscribeToShard" } else { "GetShardIterator" }), 1);
    run.handle.await.unwrap().expect("clean stop, no crash loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_position_resumes_at_trim_horizon_polling() {
    trimmed_position_resumes_at_trim_horizon(ReadMode::Polling, "trimmed-poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_position_resumes_at_trim_horizon_fan_out() {
    trimmed_position_resumes_at_trim_horizon(ReadMode::Efo, "trimmed-efo").await;
}

/// Stands for: a closed shard that expires between ListShards and the read
/// (restart near the retention period). GetShardIterator answers
/// ResourceNotFoundException ("The requested resource could not be found")
/// and later listings no longer show the shard. Before: fatal, the source
/// stopped. Now: the shard is over (as the KCL treats it), the others go on,
/// and its position is pruned from the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_not_found_on_read_is_its_end() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "gone", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 300, 0);
    produce(&emu, "gone", dir.path(), "all", &expected, false).await;
    let on_shard0 = sequences(&emu, "gone", SHARD0).await.len();
    assert!(on_shard0 > 0 && on_shard0 < expected.len());
    let proxy = chaos::start_with(
        &emu.endpoint,
        Arc::new(|c: &Call| match c.op {
            "GetShardIterator" if c.body["ShardId"] == SHARD1 => Action::Fail(
                400,
                "ResourceNotFoundException",
                "Shard shardId-000000000001 in stream gone under account 000000000000 does not exist (injected)",
            ),
            // The first listing still shows it (the read comes after); later ones do not.
            "ListShards" if c.n > 0 => Action::HideShard(SHARD1),
            _ => Action::Forward,
        }),
    )
    .await;
    let mut spec = emu.spec("gone");
    spec.endpoint = Some(proxy.endpoint.clone());
    // The checkpoint has a position in the shard that is about to expire.
    let seqs1 = sequences(&emu, "gone", SHARD1).await;
    let state = serde_json::json!({"v": 1, "stream": "gone", "shards": {SHARD1: {"seq": seqs1[0]}}, "finished": []});
    let mut run = start_source(spec, Some(state), 100);
    run.until_records(on_shard0, T).await;
    run.drain(Duration::from_secs(3)).await;
    assert!(run.records().iter().all(|r| r.shard == SHARD0));
    assert_eq!(run.records().len(), on_shard0);
    let state = SourceState::from_json(&run.checkpoint(1, true).await).unwrap();
    assert!(!state.shards.contains_key(SHARD1) && !state.finished.contains(SHARD1), "pruned: {state:?}");
    assert!(proxy.faults("GetShardIterator") >= 1);
    run.handle.await.unwrap().expect("the source kept running and stops cleanly");
}

/// Stands for: SubscribeToShard answering LimitExceededException (more than
/// 5 subscriptions per second per consumer, or a KMS throttle). Before: the
/// bounded retry policy (here 3 attempts) gave up and the source stopped.
/// Now: retried without limit, like polling's throttling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_throttling_is_retried_without_limit() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "efo-throttled", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 200, 0);
    produce(&emu, "efo-throttled", dir.path(), "all", &expected, false).await;
    let proxy = chaos::start_with(
        &emu.endpoint,
        Arc::new(|c: &Call| match c.op {
            "SubscribeToShard" if c.n < 6 => Action::Fail(400, "LimitExceededException", "Rate exceeded for consumer (injected)"),
            _ => Action::Forward,
        }),
    )
    .await;
    let mut spec = emu.spec("efo-throttled");
    spec.endpoint = Some(proxy.endpoint.clone());
    spec.mode = ReadMode::Efo;
    spec.retry = quick_retry();
    let mut run = start_source(spec, None, 100);
    run.until_records(expected.len(), T).await;
    run.drain(Duration::from_secs(1)).await;
    assert_exactly_once(&run.records(), &expected);
    assert_eq!(proxy.faults("SubscribeToShard"), 6);
}

/// Stands for: a half-open fan-out connection (the peer is gone, no FIN):
/// the event stream just stops. An open subscription gets an event every few
/// seconds, so silence means the connection is dead. Before: the shard
/// stalled until the renewal (here 5 minutes). Now: resubscribed after
/// `fan_out_idle_timeout`.
/// (The code before the change timed out with 0 of 200 records. After the
/// stall a ListShards through the proxy could hang for the SDK's 60 s attempt
/// timeout and hold the emitter; discovery now has a 10 s budget.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_fan_out_connection_is_resubscribed() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "stall", 1).await;
    let proxy = chaos::start_with(
        &emu.endpoint,
        Arc::new(|c: &Call| match c.op {
            "SubscribeToShard" if c.n == 0 => Action::Stall,
            _ => Action::Forward,
        }),
    )
    .await;
    let mut spec = emu.spec("stall");
    spec.endpoint = Some(proxy.endpoint.clone());
    spec.mode = ReadMode::Efo;
    spec.fan_out_renew_after = Dur(Duration::from_secs(300));
    spec.fan_out_idle_timeout = Dur(Duration::from_secs(2));
    let mut run = start_source(spec, None, 100);
    // Written once the first subscription went silent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 200, 0);
    produce(&emu, "stall", dir.path(), "all", &expected, false).await;
    // Well under the 5-minute renewal that was the only way out before.
    run.until_records(expected.len(), Duration::from_secs(60)).await;
    run.drain(Duration::from_secs(1)).await;
    assert_exactly_once(&run.records(), &expected);
    assert_eq!(proxy.faults("SubscribeToShard"), 1);
}

/// Stands for: a checkpoint written by a `trim_horizon` start, read again
/// after `start_position` was changed to `latest`, when the stream was
/// resharded: the parent is finished, the children have no position yet.
/// Their first records were written before the parent finished; before, they
/// started at LATEST and those records were skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_start_at_their_beginning_whatever_start_position_says_now() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "children", 1).await;
    let shards = open_shards(&client, "children").await;
    let (id, a, b) = &shards[0];
    client.split_shard().stream_name("children").shard_to_split(id).new_starting_hash_key((a + (b - a) / 2).to_string()).send().await.unwrap();
    wait_active(&client, "children").await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 300, 0);
    produce(&emu, "children", dir.path(), "all", &expected, false).await;
    let state = serde_json::json!({"v": 1, "stream": "children", "shards": {}, "finished": [SHARD0]});
    let mut spec = emu.spec("children");
    spec.start_position = StartPosition::Latest;
    let mut run = start_source(spec, Some(state), 100);
    run.until_records(expected.len(), Duration::from_secs(60)).await;
    run.drain(Duration::from_secs(1)).await;
    assert_exactly_once(&run.records(), &expected);
    assert!(run.records().iter().all(|r| r.shard != SHARD0));
}
