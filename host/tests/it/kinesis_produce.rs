//! `sluice produce` against kinesis-local, and both sides under throttling
//! (a fault-injecting proxy, since kinesis-local never throttles).

use std::sync::Arc;
use std::time::Duration;

use crate::chaos::{self, Action};
use crate::support::*;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_reads_are_retried_and_lose_nothing() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "throttled", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 600, 0);
    produce(&emu, "throttled", dir.path(), "all", &expected, false).await;
    let proxy = chaos::start(
        &emu.endpoint,
        Arc::new(|op, n| match op {
            "GetShardIterator" if n < 2 => Action::Throttle,
            "GetRecords" if n < 8 || n % 5 == 0 => Action::Throttle,
            _ => Action::Forward,
        }),
    )
    .await;
    let mut spec = emu.spec("throttled");
    spec.endpoint = Some(proxy.endpoint.clone());
    spec.poll_limit = 50;
    let mut run = start_source(spec, None, 100);
    run.until_records(expected.len(), T).await;
    run.drain(Duration::from_secs(1)).await;
    assert_exactly_once(&run.records(), &expected);
    assert!(proxy.faults("GetRecords") >= 8 && proxy.faults("GetShardIterator") == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_retries_only_the_rejected_entries() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "partial", 2).await;
    let proxy = chaos::start(
        &emu.endpoint,
        Arc::new(|op, n| match (op, n) {
            ("PutRecords", 0) => Action::Throttle,
            ("PutRecords", 1..=3) => Action::RejectHalf,
            _ => Action::Forward,
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let expected = rows("id", 1200, 0);
    let file = dir.path().join("in.ndjson");
    write_ndjson(&file, &expected);
    let mut args = emu.produce_args("partial", &file);
    args.endpoint = Some(proxy.endpoint.clone());
    args.concurrency = 1;
    let report = sluice::produce::run(args).await.unwrap();
    assert!(report.success(), "{report}");
    assert_eq!((report.read, report.sent, report.failed), (1200, 1200, 0), "{report}");
    assert!(report.retried > 0, "the throttled call and the rejected halves were retried: {report}");
    assert_eq!(report.failures_file, None);
    assert_eq!(proxy.faults("PutRecords"), 4);
    // Only rejected entries were sent again: each record is in the stream once.
    let mut run = start_source(emu.spec("partial"), None, 500);
    run.until_records(expected.len(), T).await;
    run.drain(Duration::from_secs(1)).await;
    assert_exactly_once(&run.records(), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_finally_fail_go_to_the_failure_file() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "failing", 1).await;
    let proxy = chaos::start(&emu.endpoint, Arc::new(|op, _| if op == "PutRecords" { Action::RejectHalf } else { Action::Forward })).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.ndjson");
    write_ndjson(&file, &rows("id", 100, 0));
    let failures = dir.path().join("failed.ndjson");
    let mut args = emu.produce_args("failing", &file);
    args.endpoint = Some(proxy.endpoint.clone());
    args.max_attempts = 3;
    args.failures = Some(failures.clone());
    let report = sluice::produce::run(args).await.unwrap();
    assert!(!report.success());
    // Each attempt passes the even entries of what is left: 100 → 50 → 25 → 12 still failing.
    assert_eq!((report.sent, report.failed), (88, 12), "{report}");
    assert_eq!(report.failures_file.as_deref(), Some(failures.as_path()));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&failures).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    assert!(lines.iter().all(|l| l["id"].as_str().unwrap().starts_with("id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_arrive_as_json_documents() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "csv", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trips.csv");
    std::fs::write(
        &file,
        "id,vendorId,pickupDate,dropoffDate,passengerCount,pickupLongitude,pickupLatitude,dropoffLongitude,dropoffLatitude,storeAndFwdFlag,gcDistance,tripDuration,googleDistance,googleDuration\n\
         id0000001,2,2016-03-14 17:24:55,2016-03-14 17:32:30,1,-73.982155,40.767937,-73.964630,40.765602,N,,455,,\n\
         id0000002,two,2016-03-14 17:24:55,2016-03-14 17:32:30,1,-73.982155,40.767937,-73.964630,40.765602,N,,455,,\n\
         id0000003,1,2016-03-14 17:24:55,2016-03-14 17:3\n",
    )
    .unwrap();
    let report = sluice::produce::run(emu.produce_args("csv", &file)).await.unwrap();
    assert_eq!((report.sent, report.failed), (3, 0), "{report}");
    let mut run = start_source(emu.spec("csv"), None, 100);
    run.until_records(3, T).await;
    let recs = run.records();
    let good = &recs[0].doc;
    assert_eq!(good["id"], "id0000001");
    // vendorId holds "two" in another row: each record is typed on its own.
    assert_eq!(good["vendorId"], 2);
    assert_eq!(good["passengerCount"], 1);
    assert_eq!(good["pickupLatitude"], 40.767937);
    assert_eq!(good["tripDuration"], 455);
    assert_eq!(good["pickupDate"], "2016-03-14 17:24:55");
    assert!(good.get("gcDistance").is_none() && good.get("googleDuration").is_none());
    assert_eq!(recs[1].doc["vendorId"], "two", "kept as a string for validate to reject");
    assert_eq!(recs[2].doc, serde_json::Value::String("id0000003,1,2016-03-14 17:24:55,2016-03-14 17:3".into()));
    assert_eq!(recs.iter().map(|r| r.key.clone().unwrap()).collect::<Vec<_>>(), vec!["id0000001", "id0000002", "id0000003"]);
}

/// The `sluice` binary of this build (another package of the workspace, so
/// not in `CARGO_BIN_EXE_*`): beside the `deps` directory of this test.
fn sluice_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target dir").join("sluice");
    assert!(bin.is_file(), "{} is missing: build it first (cargo build --release)", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_drains_in_flight_calls_and_reports() {
    let Some(emu) = Emulator::start() else { return };
    let client = emu.client().await;
    create_stream(&client, "interrupt", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.ndjson");
    write_ndjson(&file, &rows("id", 2000, 0));
    // The real binary in a child process: a SIGINT sent to this test process
    // would also reach the other tests of this file running beside it.
    let child = std::process::Command::new(sluice_binary())
        .args(["produce", "--stream", "interrupt", "--rate", "200", "--no-progress", "--region", REGION])
        .arg("--endpoint")
        .arg(&emu.endpoint)
        .arg("--file")
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // What Ctrl-C sends.
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nothing failed, so exit 0: {stderr}");
    let report = stderr.lines().find(|l| l.starts_with("produce: sent ")).unwrap_or_else(|| panic!("no report: {stderr}"));
    assert!(report.ends_with(", interrupted"), "{report}");
    let number = |after: &str| -> u64 {
        let rest = &report[report.find(after).unwrap_or_else(|| panic!("{after:?} in {report}")) + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let (sent, failed) = (number("sent "), number("failed "));
    let read = number(&format!("failed {failed} ("));
    assert!(read > 100 && read < 2000, "{report}");
    assert_eq!((sent, failed), (read, 0), "what was read is sent: {report}");
    let mut run = start_source(emu.spec("interrupt"), None, 500);
    run.until_records(sent as usize, T).await;
    run.drain(Duration::from_secs(1)).await;
    assert_eq!(run.records().len() as u64, sent);
}
