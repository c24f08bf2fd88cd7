use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::backend::Staged;
use super::*;
use crate::batch::{JsonRecords, Origin, RecordMeta};

/// Seconds between two observations of the test data.
const STEP_S: i64 = 61;
/// 2024-03-01T00:00:00Z.
const BASE_S: i64 = 1_709_251_200;
const STATIONS: [&str; 3] = ["KJFK", "KLGA", "KEWR"];

/// Weather observations (a neutral table: no sink default may know it):
/// row `i` is observed `i * STEP_S` seconds after `BASE_S` at station `i % 3`.
pub(crate) fn weather_batch(range: std::ops::Range<u64>) -> RecordBatch {
    let rows: Vec<i64> = range.map(|i| i as i64).collect();
    let at = |i: i64| BASE_S + i * STEP_S;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|i| format!("w-{i}")))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|&i| STATIONS[i as usize % 3]))),
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|&i| at(i) * 1000)).with_timezone("UTC")),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|&i| (i % 400) as f64 / 10.0 - 5.0))),
        Arc::new(Int64Array::from(rows.iter().map(|&i| (i % 7 != 0).then_some(i % 50)).collect::<Vec<_>>())),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|&i| (1 + (at(i) - BASE_S) / 86_400) as i32))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|&i| (at(i) % 86_400 / 3600) as i32))),
    ];
    RecordBatch::try_new(weather_schema(), cols).unwrap()
}

fn weather_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("station", DataType::Utf8, false),
        Field::new("observed", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("temp_c", DataType::Float64, true),
        Field::new("wind_kt", DataType::Int64, true),
        Field::new("day", DataType::Int32, false),
        Field::new("hour", DataType::Int32, false),
    ]))
}

/// The weather columns as a `columns = [...]` declaration.
const WEATHER_COLUMNS: &str = r#"columns = [
  { name = "id", type = "string", required = true },
  { name = "station", type = "string", required = true },
  { name = "observed", type = "timestamp", required = true },
  { name = "temp_c", type = "float64" },
  { name = "wind_kt", type = "int64" },
  { name = "day", type = "int32", required = true },
  { name = "hour", type = "int32", required = true },
]"#;

fn arrow_batch(b: RecordBatch) -> Batch {
    Batch {
        origin: Arc::new(Origin { source: "sources.gen".into(), partition: "0".into() }),
        meta: (0..b.num_rows() as u64).map(RecordMeta::line).collect(),
        data: BatchData::Arrow(b),
    }
}

fn json_batch(docs: &[&str]) -> Batch {
    Batch::json_docs("s", docs)
}

/// Unless `extra` sets `max_file_age`, every checkpoint rolls every file
/// (age 0), so a test about staging and recovery sees files per epoch.
fn spec(dir: &Path, extra: &str) -> ParquetSinkSpec {
    let age = if extra.contains("max_file_age") { "" } else { "max_file_age = \"0s\"\n" };
    toml::from_str(&format!("inputs = [\"enrich\"]\npath = {:?}\n{age}{extra}", dir.display().to_string())).unwrap()
}

/// `spec` with the weather columns declared.
fn declared(dir: &Path, extra: &str) -> ParquetSinkSpec {
    spec(dir, &format!("{extra}\n{WEATHER_COLUMNS}"))
}

/// Every file under `dir` (relative), sorted; hidden staging files included,
/// generation markers not.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with(".sluice") {
                    stack.push(p);
                }
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> RecordBatch {
    let f = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn visible(dir: &Path) -> Vec<String> {
    files(dir).into_iter().filter(|f| !f.rsplit('/').next().unwrap().starts_with('.')).collect()
}

fn token(v: &serde_json::Value) -> ParquetToken {
    serde_json::from_value(v.clone()).unwrap()
}

#[tokio::test]
async fn partitioned_files_appear_on_commit_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "row_group_rows = 1000\npartition_by = [\"day\", \"hour\", \"station\"]");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let input = weather_batch(0..5_000);
    let w = sink.write(&arrow_batch(input.slice(0, 3_000))).await.unwrap();
    assert_eq!((w.accepted, w.refused.len()), (3_000, 0));
    sink.write(&arrow_batch(input.slice(3_000, 2_000))).await.unwrap();

    let tok = sink.prepare(1).await.unwrap();
    let t = token(&tok);
    assert_eq!(t.files.iter().map(|f| f.rows).sum::<u64>(), 5_000);
    // 5000 rows 61 s apart span 85 hours; 3 stations each.
    assert_eq!(t.files.len(), 85 * 3);
    assert!(visible(dir.path()).is_empty(), "nothing visible before commit");
    assert_eq!(files(dir.path()).len(), t.files.len());

    sink.commit(&tok).await.unwrap();
    assert_eq!(sink.committed_outputs(), t.files.len() as u64);
    let names = visible(dir.path());
    assert_eq!(names.len(), t.files.len());
    let g = t.generation.clone().unwrap();
    assert!(names.iter().all(|n| n.starts_with("day=")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with(&format!("day=02/hour=07/station=KLGA/part-{g}-00000001-"))), "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".snappy.parquet")));

    // Read every file back: all rows once, values intact, partition columns not stored.
    let mut seen = std::collections::HashSet::new();
    for f in &t.files {
        let b = read(&dir.path().join(&f.key));
        assert_eq!(b.num_rows() as u64, f.rows);
        assert!(b.column_by_name("hour").is_none() && b.column_by_name("station").is_none());
        let hour: i64 = f.key.split("hour=").nth(1).unwrap()[..2].parse().unwrap();
        let observed = b.column_by_name("observed").unwrap().as_primitive::<TimestampMillisecondType>();
        for (i, id) in b.column_by_name("id").unwrap().as_string::<i32>().iter().enumerate() {
            let id = id.unwrap().to_owned();
            let n: usize = id[2..].parse().unwrap();
            assert_eq!(observed.value(i) / 1000 % 86_400 / 3600, hour);
            let orig = input.column_by_name("temp_c").unwrap().as_primitive::<Float64Type>().value(n);
            assert_eq!(b.column_by_name("temp_c").unwrap().as_primitive::<Float64Type>().value(i), orig);
            let wind = b.column_by_name("wind_kt").unwrap();
            assert_eq!(wind.is_null(i), n % 7 == 0);
            assert!(seen.insert(id));
        }
    }
    assert_eq!(seen.len(), 5_000);
}

#[tokio::test]
async fn crash_between_prepare_and_commit_then_recover_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "partition_by = [\"day\"]");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    sink.write(&arrow_batch(weather_batch(0..2_000))).await.unwrap();
    let t1 = sink.prepare(1).await.unwrap();
    // Epoch 2 staged but its checkpoint never completes; epoch 3 still open.
    sink.write(&arrow_batch(weather_batch(2_000..3_000))).await.unwrap();
    let t2 = sink.prepare(2).await.unwrap();
    sink.write(&arrow_batch(weather_batch(3_000..3_500))).await.unwrap();
    drop(sink); // crash: checkpoint 1 is durable, commit(1) never ran

    assert!(visible(dir.path()).is_empty());
    let g = token(&t1).generation.unwrap();
    let (t1f, t2f) = (token(&t1).files.len(), token(&t2).files.len());
    let open = files(dir.path()).iter().filter(|f| f.contains(&format!("part-{g}-00000003-"))).count();
    assert!(t1f >= 2 && t2f >= 1, "{t1f} {t2f} {open}");
    assert_eq!(files(dir.path()).len(), t1f + t2f + open, "epochs 1 and 2 staged, epoch 3 open (in memory)");

    for _ in 0..2 {
        // Recovery is idempotent: running it twice changes nothing more.
        let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
        sink.recover(Some(&t1)).await.unwrap();
        let all = files(dir.path());
        assert_eq!(all, visible(dir.path()), "no staged file of this generation survives recovery: {all:?}");
        assert_eq!(all.len(), t1f);
        assert!(all.iter().all(|f| f.contains(&format!("/part-{g}-00000001-"))), "{all:?}");
        let rows: usize = all.iter().map(|f| read(&dir.path().join(f)).num_rows()).sum();
        assert_eq!(rows, 2_000);
    }

    // The replay continues with epoch 2 of the same generation; names do not collide.
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(Some(&t1)).await.unwrap();
    sink.write(&arrow_batch(weather_batch(2_000..3_000))).await.unwrap();
    let t2 = sink.prepare(2).await.unwrap();
    assert_eq!(token(&t2).generation.as_deref(), Some(g.as_str()));
    sink.commit(&t2).await.unwrap();
    sink.commit(&t2).await.unwrap(); // repeated commit is harmless
    let rows: usize = visible(dir.path()).iter().map(|f| read(&dir.path().join(f)).num_rows()).sum();
    assert_eq!(rows, 3_000);
}

/// A new sink, a renamed one, or a run after the checkpoint was deleted
/// starts without a token: it must add files, never replace committed ones.
#[tokio::test]
async fn a_start_without_token_never_overwrites_committed_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "compression = \"zstd\"");
    let run = |range: std::ops::Range<u64>| {
        let s = s.clone();
        async move {
            let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
            sink.recover(None).await.unwrap();
            sink.write(&arrow_batch(weather_batch(range))).await.unwrap();
            let t = sink.prepare(1).await.unwrap();
            sink.commit(&t).await.unwrap();
            token(&t)
        }
    };
    let first = run(0..100).await;
    let first_bytes = std::fs::read(dir.path().join(&first.files[0].key)).unwrap();
    // The checkpoint directory is deleted: the next run has no token.
    let second = run(100..300).await;
    assert_ne!(first.generation, second.generation);
    let names = visible(dir.path());
    assert_eq!(names.len(), 2, "both runs' files exist: {names:?}");
    assert_eq!(std::fs::read(dir.path().join(&first.files[0].key)).unwrap(), first_bytes, "the first run's file is untouched");
    let rows: Vec<usize> = names.iter().map(|f| read(&dir.path().join(f)).num_rows()).collect();
    assert_eq!(rows.iter().sum::<usize>(), 300);
}

#[tokio::test]
async fn recover_without_token_removes_only_stale_staged_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "compression = \"zstd\"");
    // Run A: epoch 1 committed, epoch 2 staged (its checkpoint may still exist elsewhere).
    let mut a = build("sinks.lake", &s, Path::new(".")).unwrap();
    a.write(&arrow_batch(weather_batch(0..100))).await.unwrap();
    let t = a.prepare(1).await.unwrap();
    a.commit(&t).await.unwrap();
    a.write(&arrow_batch(weather_batch(100..200))).await.unwrap();
    let t2 = token(&a.prepare(2).await.unwrap());
    // Run B died before its first checkpoint: its chunk has no marker (a
    // tiny memory budget makes it write one).
    let mut b = build("sinks.lake", &declared(dir.path(), "compression = \"zstd\"\nmax_buffer_bytes = 1"), Path::new(".")).unwrap();
    b.write(&arrow_batch(weather_batch(0..10_000))).await.unwrap();
    let b_open = naming::chunk_key(&b.open.values().next().unwrap().key, 1, &b.writer);
    drop(b);
    let ga = token(&t).generation.unwrap();
    let committed = format!("part-{ga}-00000001-0000.zstd.parquet");
    let a_staged = format!(".part-{ga}-00000002-0000.zstd.parquet.inprogress");
    assert_eq!(files(dir.path()), {
        let mut v = vec![format!(".{b_open}.inprogress"), a_staged.clone(), committed.clone()];
        v.sort();
        v
    });
    // Run C starts without a token: B's orphan goes, A's staged epoch stays (A's
    // checkpoint may still commit it), nothing committed is touched.
    let mut c = build("sinks.lake", &s, Path::new(".")).unwrap();
    c.recover(None).await.unwrap();
    let mut want = vec![a_staged, committed.clone()];
    want.sort();
    assert_eq!(files(dir.path()), want);
    // And A can still recover its checkpoint.
    let mut a = build("sinks.lake", &s, Path::new(".")).unwrap();
    a.recover(Some(&serde_json::to_value(&t2).unwrap())).await.unwrap();
    assert_eq!(visible(dir.path()).len(), 2);
    let b = read(&dir.path().join(&committed));
    // Without partition columns every declared column is in the file.
    assert_eq!(b.num_columns(), weather_schema().fields().len());
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
        // A fraction does not fit an integer column (a cast would truncate it to 2).
        r#"{"id":"g","vendorId":2,"pickupDate":"2016-03-15T01:02:03Z","passengerCount":2.5}"#,
    ] {
        j.push(d.as_bytes());
    }
    let batch = Batch {
        origin: Arc::new(Origin { source: "s".into(), partition: "p".into() }),
        meta: (0..7).map(RecordMeta::line).collect(),
        data: BatchData::Json(j),
    };
    let w = sink.write(&batch).await.unwrap();
    assert_eq!(w.accepted, 2);
    assert_eq!(w.refused.len(), 5);
    let got: Vec<(usize, &str)> = w.refused.iter().map(|r| (r.index, r.code.as_str())).collect();
    assert_eq!(
        got,
        [(1, "schema_mismatch"), (2, "schema_mismatch"), (3, "schema_mismatch"), (4, "malformed"), (6, "schema_mismatch")]
    );
    assert!(w.refused[4].message.contains("passengerCount") && w.refused[4].message.contains("2.5"), "{:?}", w.refused[4]);
    assert!(w.refused[0].message.contains("pickupDate") && w.refused[0].message.contains("yesterday"), "{:?}", w.refused[0]);
    assert_eq!(w.refused[1].message, "required column id is null");
    assert!(w.refused[2].message.contains("passengerCount") && w.refused[2].message.contains("99999999999"));

    let t = sink.prepare(1).await.unwrap();
    sink.commit(&t).await.unwrap();
    let key = |p: &str| token(&t).files.iter().find(|f| f.key.starts_with(p)).unwrap().key.clone();
    let b = read(&dir.path().join(key("vendorId=2/")));
    assert_eq!(b.column(0).as_string::<i32>().value(0), "f");
    let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_458_003_723_500);
    assert!(b.column(2).is_null(0));
    let a = read(&dir.path().join(key("vendorId=1/")));
    assert_eq!(a.column(1).as_primitive::<TimestampMillisecondType>().value(0), 1_457_976_295_000);
}


/// Without `columns` the first batch fixes the schema; JSON numbers are
/// doubles so a later fraction fits; what does not fit goes to the DLQ with
/// the column named; a restart keeps the schema of the checkpoint.
#[tokio::test]
async fn without_columns_the_schema_comes_from_the_data_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "partition_by = [\"year\"]");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let w = sink
        .write(&json_batch(&[
            r#"{"station":"KJFK","year":2024,"temp":11,"wind":3}"#,
            r#"{"station":"KLGA","year":2024,"temp":12,"wind":null}"#,
        ]))
        .await
        .unwrap();
    assert_eq!((w.accepted, w.refused.len()), (2, 0));
    let schema = sink.schema().unwrap().clone();
    let types: Vec<(&str, &DataType)> = schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    assert_eq!(
        types,
        [("station", &DataType::Utf8), ("year", &DataType::Int64), ("temp", &DataType::Float64), ("wind", &DataType::Float64)]
    );
    let w = sink
        .write(&json_batch(&[
            r#"{"station":"KEWR","year":2024,"temp":11.5,"wind":4}"#,
            r#"{"station":"KEWR","year":2024,"temp":"warm","wind":4}"#,
            r#"{"station":"KEWR","year":2024,"temp":10,"gust":30}"#,
        ]))
        .await
        .unwrap();
    assert_eq!(w.accepted, 1, "{:?}", w.refused);
    let why: Vec<(usize, &str, &str)> = w.refused.iter().map(|r| (r.index, r.code.as_str(), r.message.as_str())).collect();
    assert_eq!((why[0].0, why[0].1), (1, SCHEMA_MISMATCH));
    assert!(why[0].2.contains("temp") && why[0].2.contains("warm") && why[0].2.contains("Float64"), "{}", why[0].2);
    assert_eq!((why[1].0, why[1].1), (2, SCHEMA_MISMATCH));
    assert!(why[1].2.contains("gust") && why[1].2.contains("first batch"), "{}", why[1].2);
    let t1 = sink.prepare(1).await.unwrap();
    sink.commit(&t1).await.unwrap();
    assert!(token(&t1).schema.is_some(), "{t1}");

    let key = &token(&t1).files[0].key;
    assert!(key.starts_with("year=2024/"), "{key}");
    let b = read(&dir.path().join(key));
    assert_eq!(b.num_rows(), 3);
    assert_eq!(b.column_by_name("temp").unwrap().as_primitive::<Float64Type>().values().to_vec(), [11.0, 12.0, 11.5]);

    // After a restart the first batch has `temp` as text: the recorded schema
    // still decides (the row is refused, the table keeps one type per column).
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(Some(&t1)).await.unwrap();
    assert_eq!(sink.schema(), Some(&schema));
    let w = sink.write(&json_batch(&[r#"{"station":"KJFK","year":2024,"temp":"n/a","wind":1}"#])).await.unwrap();
    assert_eq!((w.accepted, w.refused.len()), (0, 1));
    assert!(w.refused[0].message.contains("temp"), "{:?}", w.refused[0]);
}

#[tokio::test]
async fn typed_input_keeps_its_types_without_columns() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "partition_by = [\"station\"]");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    sink.write(&arrow_batch(weather_batch(0..300))).await.unwrap();
    let t = sink.prepare(1).await.unwrap();
    sink.commit(&t).await.unwrap();
    let t = token(&t);
    assert_eq!(t.files.len(), 3);
    let b = read(&dir.path().join(&t.files[0].key));
    assert_eq!(b.num_columns(), weather_schema().fields().len() - 1);
    assert_eq!(b.column_by_name("wind_kt").unwrap().data_type(), &DataType::Int64);
    assert_eq!(b.column_by_name("day").unwrap().data_type(), &DataType::Int32);
    assert_eq!(b.column_by_name("observed").unwrap().data_type(), weather_schema().field(2).data_type());
    assert_eq!(t.files.iter().map(|f| f.rows).sum::<u64>(), 300);
}

#[tokio::test]
async fn records_without_their_partition_column_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let optional_station = WEATHER_COLUMNS.replace(r#"name = "station", type = "string", required = true"#, r#"name = "station", type = "string""#);
    let s = spec(dir.path(), &format!("partition_by = [\"station\"]\n{optional_station}"));
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let without = weather_batch(0..40);
    let without = without.project(&[0, 2, 3, 4, 5, 6]).unwrap();
    assert!(without.column_by_name("station").is_none());
    sink.write(&arrow_batch(without)).await.unwrap();
    sink.write(&arrow_batch(weather_batch(40..46))).await.unwrap();
    assert_eq!(sink.default_partition_records(), 40);
    let t = sink.prepare(1).await.unwrap();
    sink.commit(&t).await.unwrap();
    let dirs: std::collections::BTreeSet<String> =
        visible(dir.path()).iter().map(|f| f.split('/').next().unwrap().to_owned()).collect();
    assert!(dirs.contains(&format!("station={NULL_PARTITION}")), "{dirs:?}");
    assert_eq!(dirs.len(), 4);
}

/// A backend whose staged writes or finishes fail on demand.
#[derive(Clone)]
struct Flaky {
    inner: LocalBackend,
    /// Staged writes left before they fail (usize::MAX: never).
    writes_left: Arc<AtomicUsize>,
    /// Finishes left before they fail.
    finishes_left: Arc<AtomicUsize>,
}

struct FlakyStaged {
    inner: Box<dyn Staged>,
    b: Flaky,
}

fn spend(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

#[async_trait]
impl Staged for FlakyStaged {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        if !spend(&self.b.writes_left) {
            return Err(BackendError { message: "EIO (injected)".into(), retryable: true });
        }
        self.inner.write(bytes).await
    }
    async fn finish(self: Box<Self>, rows: u64) -> Result<Pending, BackendError> {
        if !spend(&self.b.finishes_left) {
            return Err(BackendError { message: "ENOSPC (injected)".into(), retryable: true });
        }
        self.inner.finish(rows).await
    }
}

#[async_trait]
impl Backend for Flaky {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        Ok(Box::new(FlakyStaged { inner: self.inner.create(key).await?, b: self.clone() }))
    }
    async fn create_chunk(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        Ok(Box::new(FlakyStaged { inner: self.inner.create_chunk(key).await?, b: self.clone() }))
    }
    async fn read(&self, p: &Pending, range: std::ops::Range<u64>) -> Result<Vec<u8>, BackendError> {
        self.inner.read(p, range).await
    }
    async fn commit(&self, p: &Pending) -> Result<(), BackendError> {
        self.inner.commit(p).await
    }
    async fn staged(&self) -> Result<Vec<String>, BackendError> {
        self.inner.staged().await
    }
    async fn discard(&self, keys: &[String]) -> Result<(), BackendError> {
        self.inner.discard(keys).await
    }
    async fn mark_generation(&self, g: &str) -> Result<(), BackendError> {
        self.inner.mark_generation(g).await
    }
    async fn generations(&self) -> Result<Vec<String>, BackendError> {
        self.inner.generations().await
    }
}

/// A `prepare` that failed half-way (some files taken out and closed) must
/// not succeed when called again with less data, and the next start recovers
/// from the last checkpoint without the failed epoch's staged files.
#[tokio::test]
async fn a_failed_prepare_or_write_fails_for_good_and_recovery_discards_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "partition_by = [\"station\"]");
    let flaky = Flaky {
        inner: LocalBackend::new(dir.path()).unwrap(),
        writes_left: Arc::new(AtomicUsize::new(usize::MAX)),
        finishes_left: Arc::new(AtomicUsize::new(usize::MAX)),
    };
    let mut sink = ParquetSink::with_backend("sinks.lake", &s, Box::new(flaky.clone())).unwrap();
    sink.recover(None).await.unwrap();
    sink.write(&arrow_batch(weather_batch(0..300))).await.unwrap();
    let t1 = sink.prepare(1).await.unwrap();
    sink.commit(&t1).await.unwrap();

    sink.write(&arrow_batch(weather_batch(300..600))).await.unwrap();
    flaky.finishes_left.store(1, Ordering::SeqCst); // the second of three files fails
    let e = sink.prepare(2).await.unwrap_err();
    assert!(!e.retryable(), "a half-done prepare is not retryable: {e}");
    let again = sink.prepare(2).await;
    assert!(again.is_err(), "a repeated prepare must not return a token without the epoch's files: {again:?}");
    assert!(sink.write(&arrow_batch(weather_batch(600..601))).await.is_err());

    // A failed write (the writer's bytes were handed over and lost) likewise.
    let mut sink2 = ParquetSink::with_backend("sinks.other", &declared(&dir.path().join("w"), "max_buffer_bytes = 1000"), Box::new(Flaky {
        inner: LocalBackend::new(dir.path().join("w")).unwrap(),
        writes_left: Arc::new(AtomicUsize::new(0)),
        finishes_left: Arc::new(AtomicUsize::new(usize::MAX)),
    }))
    .unwrap();
    // Enough rows to drain encoded bytes to the backend during write.
    let r = sink2.write(&arrow_batch(weather_batch(0..200_000))).await;
    assert!(r.as_ref().is_err_and(|e| !e.retryable()), "{:?}", r.map(|w| w.accepted));
    assert!(sink2.prepare(1).await.is_err(), "no token after a failed write");

    // Restart from checkpoint 1: its files are there, epoch 2's staged files are gone.
    flaky.finishes_left.store(usize::MAX, Ordering::SeqCst);
    let mut sink = ParquetSink::with_backend("sinks.lake", &s, Box::new(flaky.clone())).unwrap();
    sink.recover(Some(&t1)).await.unwrap();
    let all = files(dir.path()).into_iter().filter(|f| !f.starts_with("w/")).collect::<Vec<_>>();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|f| !f.rsplit('/').next().unwrap().starts_with('.')), "{all:?}");
    sink.write(&arrow_batch(weather_batch(300..600))).await.unwrap();
    let t2 = sink.prepare(2).await.unwrap();
    sink.commit(&t2).await.unwrap();
    let rows: usize = visible(dir.path()).iter().filter(|f| !f.starts_with("w/")).map(|f| read(&dir.path().join(f)).num_rows()).sum();
    assert_eq!(rows, 600);
}

#[tokio::test]
async fn old_files_ask_for_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "max_file_age = \"50ms\"");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.write(&arrow_batch(weather_batch(0..10))).await.unwrap();
    assert_eq!(sink.wants_checkpoint(), None);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    assert!(sink.wants_checkpoint().unwrap().contains("max_file_age"));
    let t = token(&sink.prepare(1).await.unwrap());
    assert_eq!((t.files.len(), t.open.len()), (1, 0), "the old file rolled at the checkpoint");
    assert_eq!(sink.wants_checkpoint(), None);
}

/// Rows of every visible file, and the files' sizes.
fn visible_rows(dir: &Path) -> (Vec<String>, Vec<u64>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for f in visible(dir) {
        let b = read(&dir.join(&f));
        ids.extend(b.column_by_name("id").unwrap().as_string::<i32>().iter().map(|v| v.unwrap().to_owned()));
        sizes.push(std::fs::metadata(dir.join(&f)).unwrap().len());
    }
    ids.sort();
    (ids, sizes)
}

fn all_ids(range: std::ops::Range<u64>) -> Vec<String> {
    let b = weather_batch(range);
    let mut ids: Vec<String> = b.column_by_name("id").unwrap().as_string::<i32>().iter().map(|v| v.unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// Checkpoints do not roll files: a file collects many checkpoint
/// intervals (as chunks) until it reaches `max_file_bytes`; its chunks are
/// joined without re-encoding and removed once it is visible.
#[tokio::test]
async fn files_span_checkpoints_and_roll_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(
        dir.path(),
        "partition_by = [\"station\"]\nrow_group_rows = 2000\nmax_file_bytes = 400000\nmax_file_age = \"1h\"\nmax_buffer_bytes = 100000",
    );
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let (epochs, per_epoch) = (20u64, 6_000u64);
    for e in 0..epochs {
        sink.write(&arrow_batch(weather_batch(e * per_epoch..(e + 1) * per_epoch))).await.unwrap();
        if e + 1 == epochs {
            sink.finishing();
        }
        let t = sink.prepare(e + 1).await.unwrap();
        sink.commit(&t).await.unwrap();
    }
    let (ids, sizes) = visible_rows(dir.path());
    assert_eq!(ids, all_ids(0..epochs * per_epoch), "every row exactly once");
    assert!(files(dir.path()).iter().all(|f| !f.contains(".inprogress")), "chunks and staged files are gone: {:?}", files(dir.path()));
    // 3 stations; far fewer files than one per station and checkpoint.
    assert!(sizes.len() < (epochs as usize) * 3 / 2, "{} files: {sizes:?}", sizes.len());
    let big = sizes.iter().filter(|&&b| b >= 400_000).count();
    assert!(big >= sizes.len() - 3, "all but the last file of each station reach max_file_bytes: {sizes:?}");
    // Joined files hold one row group per chunk (at least) and read back whole.
    let f = visible(dir.path()).into_iter().next().unwrap();
    let file = std::fs::File::open(dir.path().join(&f)).unwrap();
    let groups = parquet::file::reader::FileReader::num_row_groups(&parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap());
    assert!(groups > 1, "{f}: {groups} row groups");
}

/// A crash leaves open files in the checkpoint: the next run goes on writing
/// them (no small file per crash), and what the crashed run wrote after the
/// checkpoint is discarded.
#[tokio::test]
async fn after_a_crash_open_files_continue_and_every_row_is_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "partition_by = [\"station\"]\nmax_file_age = \"1h\"\nmax_buffer_bytes = 1");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    sink.write(&arrow_batch(weather_batch(0..30_000))).await.unwrap();
    let t1 = sink.prepare(1).await.unwrap();
    sink.commit(&t1).await.unwrap();
    sink.write(&arrow_batch(weather_batch(30_000..60_000))).await.unwrap();
    let t2 = sink.prepare(2).await.unwrap();
    let tok = token(&t2);
    assert!(tok.files.is_empty() && tok.open.len() == 3 && tok.open.iter().all(|o| o.chunks.len() == 2), "{tok:?}");
    // Checkpoint 2 is durable, its commit never ran; epoch 3 half written.
    sink.write(&arrow_batch(weather_batch(60_000..70_000))).await.unwrap();
    drop(sink);
    assert!(visible(dir.path()).is_empty());

    for _ in 0..2 {
        let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
        sink.recover(Some(&t2)).await.unwrap();
        let staged = files(dir.path());
        assert_eq!(staged.len(), 6, "only the checkpoint's chunks are left: {staged:?}");
    }
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(Some(&t2)).await.unwrap();
    sink.write(&arrow_batch(weather_batch(60_000..90_000))).await.unwrap();
    sink.finishing();
    let t3 = sink.prepare(3).await.unwrap();
    // Crash before commit 3: recovery commits it (twice is harmless).
    drop(sink);
    for _ in 0..2 {
        let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
        sink.recover(Some(&t3)).await.unwrap();
    }
    let (ids, sizes) = visible_rows(dir.path());
    assert_eq!(sizes.len(), 3, "one file per station, across the crash");
    assert_eq!(ids, all_ids(0..90_000));
    assert_eq!(files(dir.path()).len(), 3, "no chunk left: {:?}", files(dir.path()));
}

/// A former owner paused past its lease resumes and closes its epoch into
/// chunks after the new owner (the same generation: it continues the open
/// files of the checkpoint it took over) wrote its chunks of that epoch: the
/// new owner's files hold its own rows only, exactly once.
#[tokio::test]
async fn a_former_owner_never_replaces_the_new_owners_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = declared(dir.path(), "partition_by = [\"station\"]\nmax_file_age = \"1h\"");
    let mut old = build("sinks.lake", &s, Path::new(".")).unwrap();
    old.recover(None).await.unwrap();
    old.write(&arrow_batch(weather_batch(0..3_000))).await.unwrap();
    let t1 = old.prepare(1).await.unwrap();
    old.commit(&t1).await.unwrap();
    let mut new = build("sinks.lake", &s, Path::new(".")).unwrap();
    new.recover(Some(&t1)).await.unwrap();
    new.write(&arrow_batch(weather_batch(3_000..6_000))).await.unwrap();
    let t2 = new.prepare(2).await.unwrap();
    assert!(token(&t2).open.iter().all(|o| o.chunks.len() == 2), "{t2}");
    // The former owner resumes: other rows, the same files and epoch.
    old.write(&arrow_batch(weather_batch(100_000..103_000))).await.unwrap();
    old.prepare(2).await.unwrap();
    new.commit(&t2).await.unwrap();
    new.finishing();
    let t3 = new.prepare(3).await.unwrap();
    new.commit(&t3).await.unwrap();
    let (ids, sizes) = visible_rows(dir.path());
    assert_eq!(sizes.len(), 3, "one file per station");
    assert_eq!(ids, all_ids(0..6_000), "the new owner's rows, exactly once");
}

/// Past `max_open_files` the least recently written files are finished
/// early; at no time are more open.
#[tokio::test]
async fn open_files_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "partition_by = [\"observed\"]\nmax_open_files = 32\nmax_file_age = \"1h\"");
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    for start in (0..1_000u64).step_by(250) {
        sink.write(&arrow_batch(weather_batch(start..start + 250))).await.unwrap();
        assert!(sink.open.len() <= 32);
    }
    let still_open = sink.open.len() as u64;
    sink.finishing();
    let t = sink.prepare(1).await.unwrap();
    sink.commit(&t).await.unwrap();
    let open = sink.open_files();
    assert_eq!(open.peak, 32);
    assert_eq!(open.finished_early, 1_000 - still_open, "{open:?}");
    assert_eq!(visible_rows(dir.path()).0, all_ids(0..1_000));
}

#[tokio::test]
async fn writer_memory_stays_within_max_buffer_bytes() {
    // Two partitions that each reach the per-file coalescing threshold on
    // their own (the case the budget check used to miss), row groups far
    // larger than the budget: only early flushes keep memory bounded.
    let dir = tempfile::tempdir().unwrap();
    let budget = 1 << 20;
    let s = declared(dir.path(), &format!("partition_by = [\"station\"]\nrow_group_rows = 1000000\nmax_buffer_bytes = {budget}"));
    let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
    sink.recover(None).await.unwrap();
    let input = weather_batch(0..120_000);
    for start in (0..input.num_rows()).step_by(4096) {
        let len = 4096.min(input.num_rows() - start);
        sink.write(&arrow_batch(input.slice(start, len))).await.unwrap();
        let used: usize = sink.open.values().filter_map(|f| f.cur.as_ref()).map(|c| c.writer.memory_size()).sum();
        assert!(used <= budget, "writers hold {used} bytes after row {start}, budget {budget}");
    }
    let token = sink.prepare(1).await.unwrap();
    sink.commit(&token).await.unwrap();
    let t: ParquetToken = serde_json::from_value(token).unwrap();
    assert_eq!(t.files.len(), 3);
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
        let s = declared(dir.path(), "partition_by = [\"day\", \"hour\", \"station\"]");
        let mut sink = build("sinks.lake", &s, Path::new(".")).unwrap();
        let all = weather_batch(0..1_000_000);
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
