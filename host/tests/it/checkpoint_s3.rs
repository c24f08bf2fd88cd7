//! The S3 checkpoint store against moto (started by tests/scripts/services/moto.sh,
//! which exports SLUICE_TEST_S3_ENDPOINT): round trip, one owner per prefix,
//! conditional writes, corrupt objects, lease release and takeover.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use sluice::checkpoint::s3::{Options, S3Store, S3Url};
use sluice::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};

pub(crate) fn endpoint() -> Option<String> {
    match std::env::var("SLUICE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "SLUICE_TEST_S3_ENDPOINT is not set (tests/scripts/services/moto.sh)");
            eprintln!("SKIPPED: SLUICE_TEST_S3_ENDPOINT is not set (run tests/scripts/services/moto.sh start)");
            None
        }
    }
}

pub(crate) fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A fresh bucket per test, so tests run in parallel on one moto.
pub(crate) async fn bucket(c: &aws_sdk_s3::Client) -> String {
    let name = format!("cp-{:016x}", rand::random::<u64>());
    c.create_bucket().bucket(&name).send().await.expect("create bucket");
    name
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn cp(epoch: u64) -> Checkpoint {
    let mut nodes = BTreeMap::new();
    nodes.insert("sources.trips".to_string(), serde_json::json!({ "offset": epoch * 100 }));
    Checkpoint { version: 1, pipeline: "taxi".into(), epoch, created: "2026-01-01T00:00:00Z".into(), nodes }
}

fn url(bucket: &str, prefix: &str) -> S3Url {
    S3Url::parse(&format!("s3://{bucket}/{prefix}")).unwrap()
}

async fn object(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = c.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.body.collect().await.unwrap().into_bytes().to_vec())
}

async fn stored_epoch(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> u64 {
    let bytes = object(c, bucket, key).await.expect("checkpoint object exists");
    serde_json::from_slice::<Checkpoint>(&bytes).unwrap().epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    let store = S3Store::open_with(c.clone(), url(&b, "pipes/taxi"), Options::default()).await.unwrap();
    assert_eq!(store.describe(), format!("s3://{b}/pipes/taxi"));
    assert_eq!(store.load().await.unwrap(), None);
    store.save(&cp(1)).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(cp(1)));
    // Later saves are conditional on the ETag the previous one returned.
    store.save(&cp(2)).await.unwrap();
    store.save(&cp(3)).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(cp(3)));
    assert_eq!(stored_epoch(&c, &b, "pipes/taxi/checkpoint.json").await, 3);
    let lease: serde_json::Value = serde_json::from_slice(&object(&c, &b, "pipes/taxi/LOCK").await.unwrap()).unwrap();
    assert_eq!(lease["pid"], std::process::id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_is_locked_out_and_the_first_keeps_going() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    let first = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.unwrap();
    first.save(&cp(1)).await.unwrap();

    let err = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.err().expect("second open must fail");
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::Locked { .. }), "{err:?}");
    assert!(msg.contains(&format!("checkpoint store s3://{b}/p is in use by another sluice process")), "{msg}");
    assert!(msg.contains(&format!("held by host {}, pid {}", hostname(), std::process::id())), "{msg}");

    // The failed newcomer wrote nothing, and did not release the first one's lease.
    assert_eq!(first.load().await.unwrap(), Some(cp(1)));
    first.save(&cp(2)).await.unwrap();
    first.save(&cp(3)).await.unwrap();
    assert_eq!(stored_epoch(&c, &b, "p/checkpoint.json").await, 3);
    // A different prefix in the same bucket is independent.
    let other = S3Store::open_with(c.clone(), url(&b, "q"), Options::default()).await.unwrap();
    other.save(&cp(9)).await.unwrap();
    assert_eq!(stored_epoch(&c, &b, "p/checkpoint.json").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_write_is_never_overwritten() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    let store = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.unwrap();
    store.save(&cp(1)).await.unwrap();
    // Someone bypasses the lease (or took it over while this process was paused).
    let foreign = serde_json::to_vec(&cp(7)).unwrap();
    c.put_object().bucket(&b).key("p/checkpoint.json").body(ByteStream::from(foreign.clone())).send().await.unwrap();
    let err = store.save(&cp(2)).await.expect_err("conditional write must fail");
    assert!(matches!(err, CheckpointError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("was written by another process since this one read it"), "{err}");
    assert_eq!(object(&c, &b, "p/checkpoint.json").await.unwrap(), foreign);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_taken_over_means_the_old_owner_stops() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    let store = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.unwrap();
    store.save(&cp(1)).await.unwrap();
    let lease = br#"{"owner":"x","host":"elsewhere","pid":1,"heartbeat_ms":0,"ttl_ms":60000}"#;
    c.put_object().bucket(&b).key("p/LOCK").body(ByteStream::from_static(lease)).send().await.unwrap();
    let err = store.save(&cp(2)).await.expect_err("lost lease");
    assert!(matches!(err, CheckpointError::Locked { .. }), "{err:?}");
    assert_eq!(stored_epoch(&c, &b, "p/checkpoint.json").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_drop_resumes() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    {
        let store = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.unwrap();
        store.save(&cp(4)).await.unwrap();
    } // dropped: the lease is released
    assert_eq!(object(&c, &b, "p/LOCK").await, None);
    let again = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.unwrap();
    assert_eq!(again.load().await.unwrap(), Some(cp(4)));
    again.save(&cp(5)).await.unwrap();
    assert_eq!(stored_epoch(&c, &b, "p/checkpoint.json").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_orphaned_leases_are_taken_over() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    // Another host, heartbeat long past its TTL: expired.
    let stale = br#"{"owner":"x","host":"elsewhere","pid":1,"heartbeat_ms":0,"ttl_ms":1000}"#;
    c.put_object().bucket(&b).key("a/LOCK").body(ByteStream::from_static(stale)).send().await.unwrap();
    let a = S3Store::open_with(c.clone(), url(&b, "a"), Options::default()).await.expect("stale lease taken over");
    a.save(&cp(1)).await.unwrap();

    // Another host with a fresh heartbeat: locked, with who and for how long.
    let now = chrono::Utc::now().timestamp_millis();
    let fresh = format!(r#"{{"owner":"x","host":"elsewhere","pid":1,"heartbeat_ms":{now},"ttl_ms":60000}}"#);
    c.put_object().bucket(&b).key("b/LOCK").body(ByteStream::from(fresh.into_bytes())).send().await.unwrap();
    let err = S3Store::open_with(c.clone(), url(&b, "b"), Options::default()).await.err().expect("fresh lease holds");
    let msg = err.to_string();
    assert!(msg.contains("host elsewhere, pid 1") && msg.contains("expires in"), "{msg}");

    // This host, boot and PID namespace, a PID that is not running (a
    // crashed run): taken over at once.
    let host = hostname();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string();
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap().display().to_string();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let orphan = format!(r#"{{"owner":"x","host":"{host}","pid":{dead},"heartbeat_ms":{now},"ttl_ms":60000,"boot_id":"{boot}","pid_ns":"{ns}"}}"#);
    c.put_object().bucket(&b).key("c/LOCK").body(ByteStream::from(orphan.into_bytes())).send().await.unwrap();
    S3Store::open_with(c.clone(), url(&b, "c"), Options::default()).await.expect("orphaned lease taken over");

    // The same host name and a PID not running here, but another PID
    // namespace (a container) or no namespace recorded: that process may be
    // alive, so the lease holds until its TTL.
    for extra in [format!(r#","boot_id":"{boot}","pid_ns":"pid:[1]""#), String::new()] {
        let other = format!(r#"{{"owner":"x","host":"{host}","pid":{dead},"heartbeat_ms":{now},"ttl_ms":60000{extra}}}"#);
        c.put_object().bucket(&b).key("d/LOCK").body(ByteStream::from(other.into_bytes())).send().await.unwrap();
        let err = S3Store::open_with(c.clone(), url(&b, "d"), Options::default()).await.err().expect("a live owner elsewhere keeps its lease");
        assert!(matches!(err, CheckpointError::Locked { .. }), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_short_lease_alive() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    let opts = Options { lease_ttl: Duration::from_millis(600), ..Options::default() };
    let store = S3Store::open_with(c.clone(), url(&b, "p"), opts.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // > 2 TTLs without a save
    let err = S3Store::open_with(c.clone(), url(&b, "p"), opts).await.err().expect("the heartbeat kept the lease");
    assert!(matches!(err, CheckpointError::Locked { .. }), "{err:?}");
    store.save(&cp(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_object_is_reported() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let b = bucket(&c).await;
    c.put_object().bucket(&b).key("p/checkpoint.json").body(ByteStream::from_static(b"{not json")).send().await.unwrap();
    let store = S3Store::open_with(c.clone(), url(&b, "p"), Options::default()).await.unwrap();
    let err = store.load().await.expect_err("corrupt");
    assert!(matches!(&err, CheckpointError::Corrupt { store, .. } if store == &format!("s3://{b}/p/checkpoint.json")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_a_clear_error() {
    let Some(ep) = endpoint() else { return };
    let c = client(&ep);
    let opts = Options {
        retry: sluice::retry::RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(50), 2, None),
        ..Options::default()
    };
    let err = S3Store::open_with(c, url("no-such-bucket-here", "p"), opts).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
    assert!(msg.contains("bucket no-such-bucket-here does not exist"), "{msg}");
}
