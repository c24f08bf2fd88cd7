//! Bad input for the Kinesis source and `sluice produce`: clear errors after
//! bounded retries, never a panic or a hang.


use std::time::Duration;

use sluice::retry::RetryPolicy;
use sluice::source::kinesis::config::ReadMode;
use sluice::source::SourceError;
use crate::support::*;

fn quick_retry() -> Option<RetryPolicy> {
    Some(RetryPolicy::new(Duration::from_millis(50), Duration::from_millis(200), 3, Some(Duration::from_secs(5))))
}

async fn source_error(run: Run) -> SourceError {
    let res = tokio::time::timeout(Duration::from_secs(60), run.handle).await.expect("fails in time").expect("no panic");
    res.expect_err("the source must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonexistent_stream_is_a_clear_error() {
    let Some(emu) = Emulator::start() else { return };
    let mut spec = emu.spec("no-such-stream");
    spec.retry = quick_retry();
    let err = source_error(start_source(spec, None, 100)).await.to_string();
    assert!(err.contains("no-such-stream") && err.contains("ResourceNotFound"), "{err}");
    assert!(err.contains("check `stream`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.ndjson");
    write_ndjson(&file, &rows("id", 3, 0));
    let err = sluice::produce::run(emu.produce_args("no-such-stream", &file)).await.expect_err("must fail").to_string();
    assert!(err.contains("no-such-stream does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_after_retries() {
    let Some(emu) = Emulator::start() else { return };
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut spec = emu.spec("s");
    spec.endpoint = Some(format!("http://127.0.0.1:{port}"));
    spec.retry = quick_retry();
    let started = std::time::Instant::now();
    let err = source_error(start_source(spec, None, 100)).await;
    assert!(matches!(err, SourceError::Remote { retryable: true, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("reachable"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.ndjson");
    write_ndjson(&file, &rows("id", 3, 0));
    let mut args = emu.produce_args("s", &file);
    args.endpoint = Some(format!("http://127.0.0.1:{port}"));
    args.max_attempts = 2;
    let err = sluice::produce::run(args).await.expect_err("must fail").to_string();
    assert!(err.contains("cannot reach Kinesis"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_foreign_checkpoints_are_config_errors() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "mine", 1).await;
    let mut spec = emu.spec("mine");
    spec.poll_limit = 0;
    assert!(matches!(source_error(start_source(spec, None, 10)).await, SourceError::Config { .. }));
    let state = serde_json::json!({"v": 1, "stream": "other", "shards": {}, "finished": []});
    let err = source_error(start_source(emu.spec("mine"), Some(state), 10)).await.to_string();
    assert!(err.contains("\"other\""), "{err}");
    // A checkpoint of an earlier stream of the same name (deleted and re-created:
    // its shard ids start over) is refused instead of skipping the new shards.
    let arn = client.describe_stream_summary().stream_name("mine").send().await.unwrap().stream_description_summary().unwrap().stream_arn().to_string();
    let state = serde_json::json!({"v": 1, "stream": "mine", "stream_arn": arn, "created_ms": 1, "shards": {}, "finished": ["shardId-000000000000"]});
    let err = source_error(start_source(emu.spec("mine"), Some(state), 10)).await;
    assert!(matches!(err, SourceError::Config { .. }) && err.to_string().contains("deleted and re-created"), "{err}");
    // `auto` without a usable consumer name still reads by polling; `efo` with a
    // bad name is refused before any call.
    let mut spec = emu.spec("mine");
    spec.mode = ReadMode::Efo;
    spec.consumer_name = Some("bad name".into());
    assert!(matches!(source_error(start_source(spec, None, 10)).await, SourceError::Config { .. }));
}
