//! The DLQ in S3 against moto: what a recovery leaves after a takeover.

use std::sync::Arc;

use sluice::batch::{Batch, BatchData, JsonRecords, Origin, RecordMeta};
use sluice::config::DlqSpec;
use sluice::sink::dlq::dlq_sink;

use super::checkpoint_s3::{bucket, client, endpoint};

fn entries(message: &str) -> Batch {
    let doc = format!(
        r#"{{"stage":"stages.validate","code":"bad_duration","message":"{message}","time":"2026-03-04T05:06:07.000Z","record":{{"id":1}}}}"#
    );
    let mut json = JsonRecords::with_capacity(1, doc.len());
    json.push(doc.as_bytes());
    let origin = Arc::new(Origin { source: "sources.trips".into(), partition: "trips.csv".into() });
    Batch { origin, meta: vec![RecordMeta::line(2)], data: BatchData::Json(json) }
}

async fn uploads(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = c.list_multipart_uploads().bucket(bucket).send().await.expect("list uploads");
    out.uploads().iter().filter_map(|u| u.key().map(str::to_owned)).collect()
}

/// An instance that lost its lease while paused goes on for a moment when it
/// resumes: it may stage an object under the very key the instance that took
/// over committed (both continue the checkpoint's generation and epoch). The
/// next recovery must abort that upload, though a committed file has its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_aborts_an_upload_that_shares_a_committed_key() {
    let Some(ep) = endpoint() else { return };
    super::support::test_env();
    let c = client(&ep);
    let b = bucket(&c).await;
    let spec = DlqSpec { path: format!("s3://{b}/errors/"), endpoint: Some(ep.clone()), region: Some("us-east-1".into()), ..DlqSpec::default() };

    let mut first = dlq_sink("dlq", &spec).unwrap();
    first.recover(None).await.unwrap();
    first.write(&entries("epoch 1")).await.unwrap();
    let t1 = first.prepare(1).await.unwrap();
    first.commit(&t1).await.unwrap();
    // Paused here in epoch 2; it has lost its lease by the time it resumes.
    first.write(&entries("from the paused instance")).await.unwrap();

    let mut second = dlq_sink("dlq", &spec).unwrap();
    second.recover(Some(&t1)).await.unwrap();
    second.write(&entries("from the instance that took over")).await.unwrap();
    let t2 = second.prepare(2).await.unwrap();
    second.commit(&t2).await.unwrap();
    // Resumed: it stages its epoch (the checkpoint it then tries to write is
    // refused for the lease, so nothing commits that).
    first.prepare(2).await.unwrap();
    let staged = uploads(&c, &b).await;
    let committed: Vec<String> = t2["files"].as_array().unwrap().iter().map(|f| format!("errors/{}", f["key"].as_str().unwrap())).collect();
    assert_eq!(staged, committed, "the paused instance's upload is under the committed key");

    let mut third = dlq_sink("dlq", &spec).unwrap();
    third.recover(Some(&t2)).await.unwrap();
    assert_eq!(uploads(&c, &b).await, Vec::<String>::new(), "a stale upload survived the recovery");
    let body = c.get_object().bucket(&b).key(&committed[0]).send().await.unwrap().body.collect().await.unwrap().into_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("from the instance that took over") && !body.contains("paused"), "{body}");
}
