//! KPL aggregates that straddle a split, against kinesis-local: what the
//! KPL does (re-sends the sub-records that landed in the wrong shard) and
//! what aws-kinesis-agg does (never re-sends), with `kpl_hash_range_filter`
//! off (the default) and on.
//!
//! Sources read: the KPL's `Retrier::succeed_if_correct_shard` retries a user
//! record whose hash key is outside the shard it landed in (when aggregation
//! is on); the KCL's `AggregatorUtil.deaggregate(records, startingHashKey,
//! endingHashKey)` then drops the copy in the wrong shard. aws-kinesis-agg's
//! "potential data loss" note: its aggregates go to the shard of the first
//! key, and KCL 2.x drops the rest.


use std::collections::BTreeMap;
use std::time::Duration;

use aws_smithy_types::Blob;
use sluice::source::kinesis::kpl::{self, Aggregator};
use crate::support::*;

const T: Duration = Duration::from_secs(60);

/// A 1-shard stream split in two at `mid`; returns mid.
async fn split_stream(client: &aws_sdk_kinesis::Client, name: &str) -> u128 {
    create_stream(client, name, 1).await;
    let shards = open_shards(client, name).await;
    let (id, a, b) = &shards[0];
    let mid = a + (b - a) / 2;
    client.split_shard().stream_name(name).shard_to_split(id).new_starting_hash_key(mid.to_string()).send().await.unwrap();
    wait_active(client, name).await;
    mid
}

fn hash(key: &str) -> u128 {
    kpl::hash_key(&kpl::UserRecord { sub: 0, partition_key: key.into(), explicit_hash_key: None, data: vec![] }).unwrap()
}

fn doc(key: &str) -> String {
    format!("{{\"id\":\"{key}\",\"v\":0}}")
}

/// Puts one aggregate of `keys` with an explicit hash key (the shard it lands in).
async fn put_aggregate(client: &aws_sdk_kinesis::Client, stream: &str, keys: &[&str], hash_key: u128) {
    let mut a = Aggregator::new(1 << 20);
    for k in keys {
        assert!(a.push(k, doc(k).as_bytes()));
    }
    let p = a.finish().unwrap();
    assert!(kpl::is_aggregated(&p.data));
    client
        .put_record()
        .stream_name(stream)
        .partition_key(p.partition_key)
        .explicit_hash_key(hash_key.to_string())
        .data(Blob::new(p.data))
        .send()
        .await
        .unwrap();
}

/// Reads everything with the filter on or off; returns copies per key.
async fn read(emu: &Emulator, stream: &str, filter: bool, at_least: usize) -> BTreeMap<String, usize> {
    let mut spec = emu.spec(stream);
    spec.kpl_hash_range_filter = filter;
    let mut run = start_source(spec, None, 100);
    run.until_records(at_least, T).await;
    run.drain(Duration::from_secs(3)).await;
    let mut copies = BTreeMap::new();
    for r in run.records() {
        *copies.entry(r.id()).or_default() += 1;
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straddling_aggregates_from_the_kpl_and_from_aws_kinesis_agg() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i:02}")).collect();

    // aws-kinesis-agg: one aggregate of every key into the lower child; nothing re-sent.
    let mid = split_stream(&client, "agg-no-resend").await;
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    let upper: Vec<&str> = all.iter().copied().filter(|k| hash(k) >= mid).collect();
    assert!(!upper.is_empty() && upper.len() < all.len(), "the aggregate straddles the split");
    put_aggregate(&client, "agg-no-resend", &all, 0).await;
    // Default: every record exactly once.
    let got = read(&emu, "agg-no-resend", false, all.len()).await;
    assert_eq!(got.len(), all.len());
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    // The KCL's rule here would lose the sub-records of the upper child.
    let got = read(&emu, "agg-no-resend", true, all.len() - upper.len()).await;
    assert_eq!(got.len(), all.len() - upper.len(), "filtered: the misrouted ones are dropped");
    assert!(upper.iter().all(|k| !got.contains_key(*k)));

    // The KPL: the same aggregate, then the misrouted sub-records re-sent to their shard.
    let mid = split_stream(&client, "agg-kpl").await;
    put_aggregate(&client, "agg-kpl", &all, 0).await;
    put_aggregate(&client, "agg-kpl", &upper, mid).await;
    // With the filter: every record exactly once.
    let got = read(&emu, "agg-kpl", true, all.len()).await;
    assert_eq!(got.len(), all.len());
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    // Without: nothing lost, the re-sent ones twice.
    let got = read(&emu, "agg-kpl", false, all.len() + upper.len()).await;
    assert_eq!(got.len(), all.len());
    assert_eq!(got.values().filter(|&&n| n == 2).count(), upper.len());
}
