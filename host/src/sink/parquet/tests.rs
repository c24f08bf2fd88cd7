use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::batch::{JsonRecords, Origin, RecordMeta};
use crate::gen::{self, GenOptions};

/// Enriched taxi records (the default declared schema) for generator rows `range`.
pub(crate) fn taxi_batch(range: std::ops::Range<u64>) -> RecordBatch {
    // At least 10k rows in the stream, so a small range still spans hours or days.
    let o = GenOptions { rows: range.end.max(10_000), seed: 9, bad_fraction: 0.0 };
    let rows: Vec<gen::Row> = range.map(|i| gen::row(&o, i)).collect();
    let schema = taxi_logic::schema::enriched();
    let ms = |s: i64| s * 1000;
    let part = |f: fn(i64) -> i32| Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| f(r.pickup_s)))) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.id()))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.vendor_id))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| ms(r.pickup_s))).with_timezone("UTC")),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| ms(r.dropoff_s))).with_timezone("UTC")),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.passenger_count))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.pickup_lon))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.pickup_lat))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.dropoff_lon))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.dropoff_lat))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| if r.store_and_fwd { "Y" } else { "N" }))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| gen::haversine_km(r.pickup_lon, r.pickup_lat, r.dropoff_lon, r.dropoff_lat)),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.dropoff_s - r.pickup_s))),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.precomputed.map(|p| p.google_distance_km)).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.precomputed.map(|p| p.google_duration_s)).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "test"))),
        part(|s| gen_civil(s).0),
        part(|s| gen_civil(s).1),
        part(|s| gen_civil(s).2),
        part(|s| gen_civil(s).3),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// (year, month, day, hour) of epoch seconds; the generator's week needs no calendar library.
fn gen_civil(s: i64) -> (i32, i32, i32, i32) {
    let day = (s - gen_base()) / 86_400;
    (2016, 3, 14 + day as i32, ((s % 86_400) / 3600) as i32)
}
fn gen_base() -> i64 {
    1_457_913_600
}

fn arrow_batch(b: RecordBatch) -> Batch {
    Batch {
        origin: Arc::new(Origin { source: "sources.gen".into(), partition: "0".into() }),
        meta: (0..b.num_rows() as u64).map(RecordMeta::line).collect(),
        data: BatchData::Arrow(b),
    }
}

fn spec(dir: &Path, extra: &str) -> ParquetSinkSpec {
    toml::from_str(&format!("inputs = [\"enrich\"]\npath = {:?}\n{extra}", dir.display().to_string())).unwrap()
}

/// Every file under `dir` (relative), sorted; hidden staging files included.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn read(path: &PathBuf) -> RecordBatch {
    let f = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn visible(dir: &Path) -> Vec<String> {
    files(dir).into_iter().filter(|f| !f.rsplit('/').next().unwrap().starts_with('.')).collect()
}

#[tokio::test]
async fn partitioned_files_appear_on_commit_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "row_group_rows = 1000");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let input = taxi_batch(0..5_000);
    let w = sink.write(&arrow_batch(input.slice(0, 3_000))).await.unwrap();
    assert_eq!((w.accepted, w.refused.len()), (3_000, 0));
    sink.write(&arrow_batch(input.slice(3_000, 2_000))).await.unwrap();

    let token = sink.prepare(1).await.unwrap();
    let t: ParquetToken = serde_json::from_value(token.clone()).unwrap();
    assert_eq!(t.files.iter().map(|f| f.rows).sum::<u64>(), 5_000);
    // Half of the week (5000 of 10000 rows): about 84 hours × 2 vendors.
    assert!((150..=180).contains(&t.files.len()), "{}", t.files.len());
    assert!(visible(dir.path()).is_empty(), "nothing visible before commit");
    assert_eq!(files(dir.path()).len(), t.files.len());

    sink.commit(&token).await.unwrap();
    assert_eq!(sink.committed_outputs(), t.files.len() as u64);
    let names = visible(dir.path());
    assert_eq!(names.len(), t.files.len());
    assert!(names.iter().all(|n| n.starts_with("year=2016/month=03/day=")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("/hour=07/vendorId=2/part-00000001-")), "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".snappy.parquet")));

    // Read every file back: all rows once, values intact, partition columns not stored.
    let mut seen = std::collections::HashSet::new();
    for f in &t.files {
        let b = read(&dir.path().join(&f.key));
        assert_eq!(b.num_rows() as u64, f.rows);
        assert!(b.column_by_name("hour").is_none() && b.column_by_name("vendorId").is_none());
        let hour: i64 = f.key.split("hour=").nth(1).unwrap()[..2].parse().unwrap();
        let pickup = b.column_by_name("pickupDate").unwrap().as_primitive::<TimestampMillisecondType>();
        for (i, id) in b.column_by_name("id").unwrap().as_string::<i32>().iter().enumerate() {
            let id = id.unwrap().to_owned();
            let n: usize = id[2..].parse().unwrap();
            assert_eq!(pickup.value(i) / 1000 % 86_400 / 3600, hour);
            let orig_lon = input.column_by_name("pickupLongitude").unwrap().as_primitive::<Float64Type>().value(n);
            let lon = b.column_by_name("pickupLongitude").unwrap().as_primitive::<Float64Type>().value(i);
            assert_eq!(lon, orig_lon);
            let dur = b.column_by_name("tripDuration").unwrap().as_primitive::<Int64Type>().value(i);
            assert!((120..=3600).contains(&dur));
            assert!(seen.insert(id));
        }
    }
    assert_eq!(seen.len(), 5_000);
}

#[tokio::test]
async fn crash_between_prepare_and_commit_then_recover_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "partition_by = [\"day\"]");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    sink.write(&arrow_batch(taxi_batch(0..2_000))).await.unwrap();
    let t1 = sink.prepare(1).await.unwrap();
    // Epoch 2 staged but its checkpoint never completes; epoch 3 still open.
    sink.write(&arrow_batch(taxi_batch(2_000..3_000))).await.unwrap();
    let _t2 = sink.prepare(2).await.unwrap();
    sink.write(&arrow_batch(taxi_batch(3_000..3_500))).await.unwrap();
    drop(sink); // crash: checkpoint 1 is durable, commit(1) never ran

    assert!(visible(dir.path()).is_empty());
    let (t1f, t2f) = (
        serde_json::from_value::<ParquetToken>(t1.clone()).unwrap().files.len(),
        serde_json::from_value::<ParquetToken>(_t2).unwrap().files.len(),
    );
    let open = files(dir.path()).iter().filter(|f| f.contains("part-00000003-")).count();
    assert!(t1f >= 2 && t2f >= 1 && open >= 1, "{t1f} {t2f} {open}");
    assert_eq!(files(dir.path()).len(), t1f + t2f + open, "epochs 1 and 2 staged, epoch 3 open");

    for _ in 0..2 {
        // Recovery is idempotent: running it twice changes nothing more.
        let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
        sink.recover(Some(&t1)).await.unwrap();
        let all = files(dir.path());
        assert_eq!(all, visible(dir.path()), "no staged file survives recovery: {all:?}");
        assert_eq!(all.len(), t1f);
        assert!(all.iter().all(|f| f.contains("/part-00000001-")), "{all:?}");
        let rows: usize = all.iter().map(|f| read(&dir.path().join(f)).num_rows()).sum();
        assert_eq!(rows, 2_000);
    }

    // The replay continues with epoch 2 and its names do not collide.
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(Some(&t1)).await.unwrap();
    sink.write(&arrow_batch(taxi_batch(2_000..3_000))).await.unwrap();
    let t2 = sink.prepare(2).await.unwrap();
    sink.commit(&t2).await.unwrap();
    sink.commit(&t2).await.unwrap(); // repeated commit is harmless
    let rows: usize = visible(dir.path()).iter().map(|f| read(&dir.path().join(f)).num_rows()).sum();
    assert_eq!(rows, 3_000);
}

#[tokio::test]
async fn recover_without_checkpoint_removes_staged_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "partition_by = []\ncompression = \"zstd\"");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.write(&arrow_batch(taxi_batch(0..100))).await.unwrap();
    let t = sink.prepare(1).await.unwrap();
    sink.commit(&t).await.unwrap();
    sink.write(&arrow_batch(taxi_batch(100..200))).await.unwrap();
    sink.prepare(2).await.unwrap();
    assert_eq!(files(dir.path()), [".part-00000002-0000.zstd.parquet.inprogress", "part-00000001-0000.zstd.parquet"]);

    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    assert_eq!(files(dir.path()), ["part-00000001-0000.zstd.parquet"]);
    let b = read(&dir.path().join("part-00000001-0000.zstd.parquet"));
    // Without partition columns every declared column is in the file.
    assert_eq!(b.num_columns(), taxi_logic::schema::enriched().fields().len());
}

#[tokio::test]
async fn rows_that_do_not_fit_are_refused_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        dir.path(),
        r#"partition_by = ["vendorId"]
columns = [
  { name = "id", type = "string", required = true },
  { name = "vendorId", type = "int32", required = true },
  { name = "pickupDate", type = "timestamp", required = true },
  { name = "passengerCount", type = "int32" },
]"#,
    );
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    // JSON-shaped input: strings for timestamps, Int64 numbers, an extra column.
    let mut j = JsonRecords::default();
    for d in [
        r#"{"id":"a","vendorId":1,"pickupDate":"2016-03-14 17:24:55","passengerCount":1,"extra":true}"#,
        r#"{"id":"b","vendorId":2,"pickupDate":"yesterday","passengerCount":2}"#,
        r#"{"id":null,"vendorId":2,"pickupDate":"2016-03-14T18:00:00Z","passengerCount":3}"#,
        r#"{"id":"d","vendorId":2,"pickupDate":"2016-03-14T18:00:00Z","passengerCount":99999999999}"#,
        "not json",
        r#"{"id":"f","vendorId":2,"pickupDate":"2016-03-15T01:02:03.5Z"}"#,
    ] {
        j.push(d.as_bytes());
    }
    let batch = Batch {
        origin: Arc::new(Origin { source: "s".into(), partition: "p".into() }),
        meta: (0..6).map(RecordMeta::line).collect(),
        data: BatchData::Json(j),
    };
    let w = sink.write(&batch).await.unwrap();
    assert_eq!(w.accepted, 2);
    let got: Vec<(usize, &str)> = w.refused.iter().map(|r| (r.index, r.code.as_str())).collect();
    assert_eq!(got, [(1, "schema_mismatch"), (2, "schema_mismatch"), (3, "schema_mismatch"), (4, "malformed")]);
    assert!(w.refused[0].message.contains("pickupDate") && w.refused[0].message.contains("yesterday"), "{:?}", w.refused[0]);
    assert_eq!(w.refused[1].message, "required column id is null");
    assert!(w.refused[2].message.contains("passengerCount") && w.refused[2].message.contains("99999999999"));

    let t = sink.prepare(1).await.unwrap();
    sink.commit(&t).await.unwrap();
    let b = read(&dir.path().join("vendorId=2/part-00000001-0001.snappy.parquet"));
    assert_eq!(b.column(0).as_string::<i32>().value(0), "f");
    let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_458_003_723_500);
    assert!(b.column(2).is_null(0));
    let a = read(&dir.path().join("vendorId=1/part-00000001-0000.snappy.parquet"));
    assert_eq!(a.column(1).as_primitive::<TimestampMillisecondType>().value(0), 1_457_976_295_000);
}

#[tokio::test]
async fn large_files_ask_for_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "partition_by = []\nmax_file_bytes = 200000\nrow_group_rows = 5000");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    assert_eq!(sink.wants_checkpoint(), None);
    sink.write(&arrow_batch(taxi_batch(0..100))).await.unwrap();
    assert_eq!(sink.wants_checkpoint(), None);
    sink.write(&arrow_batch(taxi_batch(100..20_000))).await.unwrap();
    let why = sink.wants_checkpoint().expect("over 200000 bytes");
    assert!(why.contains("max_file_bytes"), "{why}");
    sink.prepare(1).await.unwrap();
    assert_eq!(sink.wants_checkpoint(), None);

    let s = spec(dir.path(), "partition_by = []\nmax_file_age = \"50ms\"");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.write(&arrow_batch(taxi_batch(0..10))).await.unwrap();
    assert_eq!(sink.wants_checkpoint(), None);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    assert!(sink.wants_checkpoint().unwrap().contains("max_file_age"));
}

#[tokio::test]
async fn writer_memory_stays_within_max_buffer_bytes() {
    // Two partitions that each reach the per-file coalescing threshold on
    // their own (the case the budget check used to miss), row groups far
    // larger than the budget: only early flushes keep memory bounded.
    let dir = tempfile::tempdir().unwrap();
    let budget = 1 << 20;
    let s = spec(dir.path(), &format!("partition_by = [\"vendorId\"]\nrow_group_rows = 1000000\nmax_buffer_bytes = {budget}"));
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let input = taxi_batch(0..120_000);
    for start in (0..input.num_rows()).step_by(4096) {
        let len = 4096.min(input.num_rows() - start);
        sink.write(&arrow_batch(input.slice(start, len))).await.unwrap();
        let used: usize = sink.open.values().map(|f| f.writer.memory_size()).sum();
        assert!(used <= budget, "writers hold {used} bytes after row {start}, budget {budget}");
    }
    let token = sink.prepare(1).await.unwrap();
    sink.commit(&token).await.unwrap();
    let t: ParquetToken = serde_json::from_value(token).unwrap();
    assert_eq!(t.files.len(), 2);
    let rows: usize = t.files.iter().map(|f| read(&dir.path().join(&f.key)).num_rows()).sum();
    assert_eq!(rows, 120_000, "early flushes lose nothing");
    let groups = t.files.iter().map(|f| {
        let file = std::fs::File::open(dir.path().join(&f.key)).unwrap();
        parquet::file::reader::FileReader::num_row_groups(&parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap())
    });
    assert!(groups.min().unwrap() > 1, "the budget forced row groups to close early");
}

/// Throughput of the sink alone (not a test of speed: run with --ignored --nocapture).
#[tokio::test]
#[ignore]
async fn bench_sink_throughput() {
    // Time-ordered rows (as generated), then the same rows shuffled across the week.
    for shuffled in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), "");
        let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
        let all = taxi_batch(0..1_000_000);
        let all = if shuffled {
            let perm: Vec<u32> = (0..1_000_000u64).map(|i| ((i * 7_919) % 1_000_000) as u32).collect();
            arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(perm)).unwrap()
        } else {
            all
        };
        let batches: Vec<Batch> = (0..500).map(|i| arrow_batch(all.slice(i * 2_000, 2_000))).collect();
        let start = std::time::Instant::now();
        for b in &batches {
            sink.write(b).await.unwrap();
        }
        let written = start.elapsed().as_secs_f64();
        let t = sink.prepare(1).await.unwrap();
        sink.commit(&t).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "parquet sink (shuffled: {shuffled}): 1M rows in {secs:.2}s ({written:.2}s writing) = {:.0} rows/s, {} files",
            1e6 / secs,
            sink.committed_outputs()
        );
    }
}
