//! The file source run end to end on a detached context: what a plugin or
//! sink downstream receives, what goes to the DLQ, and what a restart emits.

use std::io::Write;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde_json::{json, Value};

use super::config::FileSourceSpec;
use super::run;
use crate::batch::{Batch, BatchData, Format};
use crate::config::units::ByteSize;
use crate::config::BatchSpec;
use crate::pipeline::msg::{Barrier, Msg, Request};
use crate::source::SourceCtx;

const FLIGHTS: &str = "\
carrier,flight,origin,zip,dep_delay,arr_delay,cancelled,sched_dep
AA,1,JFK,02134,-3,11.0,false,2024-01-05 07:10:00
UA,22,SFO,10001,,-4.5,false,2024-01-05 08:00:00
DL,333,ATL,60601,12,7,true,2024-01-05T09:30:00Z
";

struct Out {
    batches: Vec<Batch>,
    dead: Vec<Value>,
    /// The position acknowledged with the last barrier.
    state: Value,
}

impl Out {
    fn docs(&self) -> Vec<Value> {
        self.batches
            .iter()
            .flat_map(|b| match &b.data {
                BatchData::Json(j) => j.iter().map(|d| serde_json::from_slice(d).unwrap()).collect::<Vec<Value>>(),
                BatchData::Arrow(_) => panic!("expected JSON batches"),
            })
            .collect()
    }
    fn seqs(&self) -> Vec<String> {
        self.batches.iter().flat_map(|b| b.meta.iter().map(|m| m.seq.to_string())).collect()
    }
}

fn spec(path: &std::path::Path, extra: &str) -> FileSourceSpec {
    let toml = format!("path = {:?}\n{extra}", path.display().to_string());
    toml::from_str(&toml).unwrap()
}

fn file(text: &str, ext: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

async fn read(spec: FileSourceSpec, format: Format, resume: Option<Value>, max_records: usize) -> Out {
    let batch = BatchSpec {
        max_records,
        max_bytes: ByteSize(1 << 20),
        channel_capacity: 4,
    };
    let mut d = SourceCtx::detached("flights", batch, resume);
    d.ctx.preferred = format;
    let handle = tokio::spawn(run(spec, d.ctx));
    let mut out = Out { batches: Vec::new(), dead: Vec::new(), state: Value::Null };
    let mut requests_open = true;
    loop {
        tokio::select! {
            env = d.data.recv() => match env {
                Some(env) => if let Msg::Data(b) = env.msg { out.batches.push(b) },
                None => break,
            },
            Some(env) = d.dlq.recv() => if let Msg::DeadLetters(letters) = env.msg {
                out.dead.extend(envelopes(&letters));
            },
            req = d.requests.recv(), if requests_open => match req {
                Some(Request::Exhausted { .. }) => d.barriers.send(Barrier { epoch: 1, last: true, drained: true }).unwrap(),
                Some(_) => {}
                None => requests_open = false,
            },
        }
    }
    handle.await.unwrap().unwrap();
    while let Ok(env) = d.dlq.try_recv() {
        if let Msg::DeadLetters(letters) = env.msg {
            out.dead.extend(envelopes(&letters));
        }
    }
    while let Ok(a) = d.acks.try_recv() {
        out.state = a.state.unwrap_or_default();
    }
    out
}

/// Dead letters as the DLQ file gets them.
fn envelopes(letters: &[crate::dead_letter::DeadLetter]) -> Vec<Value> {
    let Some(b) = crate::sink::dlq::encode(letters) else { return Vec::new() };
    let BatchData::Json(j) = &b.data else { panic!("DLQ envelopes are JSON") };
    j.iter().map(|d| serde_json::from_slice::<Value>(d).unwrap()).collect()
}

#[tokio::test]
async fn csv_cells_reach_json_consumers_typed() {
    let f = file(FLIGHTS, ".csv");
    let out = read(spec(f.path(), ""), Format::Json, None, 100).await;
    assert!(out.dead.is_empty(), "{:?}", out.dead);
    let docs = out.docs();
    assert_eq!(
        docs[0],
        json!({"carrier":"AA","flight":1,"origin":"JFK","zip":"02134","dep_delay":-3,"arr_delay":11.0,"cancelled":false,"sched_dep":"2024-01-05 07:10:00"})
    );
    assert!(docs[0]["arr_delay"].is_f64() && docs[0]["flight"].is_i64());
    // An empty cell is left out; an integer in a float column is a float.
    assert!(docs[1].get("dep_delay").is_none());
    assert_eq!(docs[2]["arr_delay"], json!(7.0));
    assert_eq!(docs[2]["zip"], json!("60601"), "a column with a leading-zero cell stays text");
    assert_eq!(out.seqs(), ["2", "3", "4"]);
}

#[tokio::test]
async fn csv_arrow_batches_have_typed_columns_and_one_schema() {
    let f = file(FLIGHTS, ".csv");
    let out = read(spec(f.path(), ""), Format::Arrow, None, 1).await;
    assert_eq!(out.batches.len(), 3);
    let schemas: Vec<_> = out
        .batches
        .iter()
        .map(|b| match &b.data {
            BatchData::Arrow(a) => a.schema(),
            _ => panic!(),
        })
        .collect();
    assert!(schemas.iter().all(|s| s == &schemas[0]), "{schemas:?}");
    let types: Vec<(&str, &DataType)> =
        schemas[0].fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    assert_eq!(types[1], ("flight", &DataType::Int64));
    assert_eq!(types[3], ("zip", &DataType::Utf8));
    assert_eq!(types[5], ("arr_delay", &DataType::Float64));
    assert_eq!(types[6], ("cancelled", &DataType::Boolean));
    assert!(matches!(types[7].1, DataType::Timestamp(_, Some(_))));
    let BatchData::Arrow(b) = &out.batches[1].data else { panic!() };
    assert!(b.column(4).is_null(0));
    assert_eq!(b.column(5).as_primitive::<Float64Type>().value(0), -4.5);
    let BatchData::Arrow(b) = &out.batches[2].data else { panic!() };
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 333);
}

#[tokio::test]
async fn a_cell_that_does_not_fit_sends_its_row_to_the_dlq() {
    let text = format!("{FLIGHTS}WN,4,DEN,80202,n/a,1.5,false,2024-01-05 10:00:00\n");
    let f = file(&text, ".csv");
    // Inferred from the first 3 rows: dep_delay is int64.
    let out = read(spec(f.path(), "infer_rows = 3"), Format::Json, None, 100).await;
    assert_eq!(out.docs().len(), 3);
    assert_eq!(out.dead.len(), 1, "{:?}", out.dead);
    let e = &out.dead[0];
    assert_eq!(
        (e["stage"].as_str(), e["code"].as_str(), e["seq"].as_str()),
        (Some("sources.flights"), Some("malformed"), Some("5"))
    );
    assert_eq!(e["message"], r#"column "dep_delay": "n/a" is not an int64"#);
    assert_eq!(e["record"], "WN,4,DEN,80202,n/a,1.5,false,2024-01-05 10:00:00");
    // Declared types win over inference; infer_rows = 0 keeps the rest text.
    let out = read(
        spec(f.path(), "infer_rows = 0\ncolumns = [{ name = \"flight\", type = \"float64\" }]"),
        Format::Json,
        None,
        100,
    )
    .await;
    assert!(out.dead.is_empty());
    assert_eq!(out.docs()[3]["flight"], json!(4.0));
    assert_eq!(out.docs()[3]["dep_delay"], json!("n/a"));
}

#[tokio::test]
async fn a_stray_quote_costs_one_row() {
    let mut text = String::from("id,name,score\n");
    for i in 1..=50 {
        if i == 10 {
            text.push_str("10,\"unterminated,1\n");
        } else {
            text.push_str(&format!("{i},n{i},{i}\n"));
        }
    }
    let f = file(&text, ".csv");
    let out = read(spec(f.path(), ""), Format::Json, None, 7).await;
    assert_eq!(out.docs().len(), 49);
    assert_eq!(out.dead.len(), 1, "{:?}", out.dead);
    assert_eq!(out.dead[0]["seq"], "11");
    assert!(out.dead[0]["message"].as_str().unwrap().contains("unterminated quoted field"));
    assert_eq!(out.docs()[48]["score"], json!(50));
}

#[tokio::test]
async fn lines_that_are_not_utf8_go_to_the_dlq_in_either_form() {
    let mut f = tempfile::Builder::new().suffix(".ndjson").tempfile().unwrap();
    f.write_all(b"{\"a\":\"ok\"}\n{\"a\":\"\xff\"}\n{\"a\":\"fine\"}\n").unwrap();
    let out = read(spec(f.path(), ""), Format::Json, None, 100).await;
    assert_eq!(out.docs(), vec![json!({"a":"ok"}), json!({"a":"fine"})]);
    assert_eq!(out.dead.len(), 1, "{:?}", out.dead);
    assert_eq!((out.dead[0]["code"].as_str(), out.dead[0]["seq"].as_str()), (Some("malformed"), Some("2")));
    let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    f.write_all(b"a,b\n1,x\n2,\xff\n3,\"q\xff\"\n4,y\n").unwrap();
    for extra in ["", "infer_rows = 0"] {
        let out = read(spec(f.path(), extra), Format::Arrow, None, 100).await;
        let rows: usize = out.batches.iter().map(|b| b.len()).sum();
        assert_eq!(rows, 2, "{extra}");
        let seqs: Vec<&str> = out.dead.iter().map(|d| d["seq"].as_str().unwrap()).collect();
        assert_eq!(seqs, ["3", "4"], "{extra}");
        assert!(out.dead.iter().all(|d| d["message"].as_str().unwrap().contains("UTF-8")), "{:?}", out.dead);
    }
}

#[tokio::test]
async fn records_over_max_record_bytes_go_to_the_dlq_with_a_prefix() {
    let big = "x".repeat(3 << 20);
    let f = file(&format!("a,b\n1,ok\n2,{big}\n3,ok\n"), ".csv");
    let out = read(spec(f.path(), ""), Format::Json, None, 100).await;
    assert_eq!(out.docs().len(), 2);
    assert_eq!(out.dead.len(), 1);
    let e = &out.dead[0];
    assert_eq!(e["code"], "too_large");
    assert!(e["message"].as_str().unwrap().contains(&format!("{} bytes", big.len() + 2)), "{e}");
    assert_eq!(e["record"].as_str().unwrap().len(), 1024);
    // NDJSON lines too, with the limit set on the source.
    let f = file(&format!("{{\"a\":1}}\n{{\"a\":\"{}\"}}\n{{\"a\":3}}\n", "y".repeat(5000)), ".ndjson");
    let out = read(spec(f.path(), "max_record_bytes = \"4KiB\""), Format::Json, None, 100).await;
    assert_eq!(out.docs(), vec![json!({"a":1}), json!({"a":3})]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!((out.dead[0]["code"].as_str(), out.dead[0]["seq"].as_str()), (Some("too_large"), Some("2")));
}

#[tokio::test]
async fn a_restart_keeps_the_schema_of_the_first_run() {
    // The first rows make `v` int64; the file later holds decimals.
    let mut text = String::from("k,v\n");
    for i in 0..5 {
        text.push_str(&format!("a{i},{i}\n"));
    }
    let f = file(&text, ".csv");
    let first = read(spec(f.path(), ""), Format::Arrow, None, 100).await;
    assert_eq!(first.state["columns"], json!([{"name":"k","type":"string"},{"name":"v","type":"int64"}]));
    // Rows appended after the checkpoint; inference from the start of the
    // file would now say float64 — the recorded schema holds.
    let mut more = std::fs::OpenOptions::new().append(true).open(f.path()).unwrap();
    more.write_all(b"b0,7\nb1,2.5\n").unwrap();
    let mut changed = first.state.clone();
    changed["columns"] = Value::Null;
    let resumed = read(spec(f.path(), "infer_rows = 10"), Format::Arrow, Some(first.state.clone()), 100).await;
    let BatchData::Arrow(b) = &resumed.batches[0].data else { panic!() };
    assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
    assert_eq!(b.num_rows(), 1);
    assert_eq!(resumed.dead.len(), 1);
    assert_eq!(resumed.dead[0]["message"], r#"column "v": "2.5" is not an int64"#);
    assert_eq!(resumed.seqs(), ["7"]);
    // A checkpoint without recorded types (older versions) re-infers from the start.
    let old = read(spec(f.path(), "infer_rows = 10"), Format::Arrow, Some(changed), 100).await;
    let BatchData::Arrow(b) = &old.batches[0].data else { panic!() };
    assert_eq!(b.schema().field(1).data_type(), &DataType::Float64);
}

#[tokio::test]
async fn ndjson_arrow_batches_are_typed_by_the_first_lines() {
    let f = file("{\"id\":\"a\",\"n\":1,\"x\":1.5,\"t\":\"2024-01-05T07:10:00Z\"}\n{\"id\":\"b\",\"n\":2,\"x\":2}\n{\"id\":\"c\",\"n\":\"zz\"}\n{\"id\":\"d\",\"extra\":true}\n", ".ndjson");
    let out = read(spec(f.path(), "infer_rows = 2"), Format::Arrow, None, 100).await;
    let BatchData::Arrow(b) = &out.batches[0].data else { panic!() };
    let types: Vec<_> = b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(types[1], ("n".to_string(), DataType::Int64));
    assert_eq!(types[2], ("x".to_string(), DataType::Float64));
    assert!(matches!(types[3].1, DataType::Timestamp(_, _)));
    assert_eq!(b.num_rows(), 2);
    let msgs: Vec<&str> = out.dead.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0], r#"column "n": "zz" is not an int64"#);
    assert!(msgs[1].contains("\"extra\""), "{}", msgs[1]);
}

#[test]
fn validate_checks_declared_columns_against_the_header() {
    let f = file(FLIGHTS, ".csv");
    let e = super::check(&spec(f.path(), "columns = [{ name = \"nope\", type = \"int64\" }]")).unwrap_err();
    assert!(e.starts_with("\"nope\" is not a column of the CSV header (carrier, flight,"), "{e}");
    let twice = "columns = [{ name = \"zip\", type = \"string\" }, { name = \"zip\", type = \"int64\" }]";
    assert_eq!(super::check(&spec(f.path(), twice)).unwrap_err(), "\"zip\" is declared twice");
    assert!(super::check(&spec(f.path(), "columns = [{ name = \"zip\", type = \"int64\" }]")).is_ok());
    let e = toml::from_str::<FileSourceSpec>("path = \"x\"\ncolumns = [{ name = \"a\", type = \"int\" }]").unwrap_err();
    assert!(e.to_string().contains("unknown variant `int`"), "{e}");
}

#[tokio::test]
async fn a_run_resumed_at_the_end_checkpoints_the_end() {
    // Three runs over a finished file: the second reads nothing, and what it
    // acknowledges must still be the end, or the third reads it all again.
    let f = file(FLIGHTS, ".csv");
    let first = read(spec(f.path(), ""), Format::Arrow, None, 100).await;
    assert_eq!(first.seqs().len(), 3);
    assert_eq!(first.state["line"], 4, "{}", first.state);
    let second = read(spec(f.path(), ""), Format::Arrow, Some(first.state.clone()), 100).await;
    assert!(second.batches.is_empty());
    assert_eq!(second.state, first.state, "the position acknowledged by a run that read nothing");
    let third = read(spec(f.path(), ""), Format::Arrow, Some(second.state.clone()), 100).await;
    assert!(third.batches.is_empty(), "records read again: {:?}", third.seqs());
    assert_eq!(third.state, first.state);
}

#[tokio::test]
async fn a_checkpoint_without_a_position_is_an_error_not_a_second_pass() {
    // Earlier versions wrote `null` after a run that resumed at the end.
    let f = file(FLIGHTS, ".csv");
    let batch = BatchSpec { max_records: 100, max_bytes: ByteSize(1 << 20), channel_capacity: 4 };
    let mut d = SourceCtx::detached("flights", batch, Some(Value::Null));
    let e = run(spec(f.path(), ""), d.ctx).await.unwrap_err().to_string();
    assert!(e.contains("holds no position") && e.contains("read to its end"), "{e}");
    assert!(d.data.try_recv().is_err(), "records were emitted");
}

#[tokio::test]
async fn max_records_per_second_paces_the_input_and_loses_nothing() {
    let mut text = String::from("k,v\n");
    for i in 0..30 {
        text.push_str(&format!("a{i},{i}\n"));
    }
    let f = file(&text, ".csv");
    let started = std::time::Instant::now();
    let out = read(spec(f.path(), "max_records_per_second = 100"), Format::Arrow, None, 4096).await;
    let elapsed = started.elapsed();
    let sizes: Vec<usize> = out.batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, [10, 10, 10], "batches of a tenth of a second's records");
    assert_eq!(out.state["line"], 31);
    // A lower bound only: the last batch is due after 0.3 s.
    assert!(elapsed >= std::time::Duration::from_millis(250), "{elapsed:?}");
    let e = toml::from_str::<FileSourceSpec>("path = \"x\"\nmax_records_per_second = 0").unwrap_err();
    assert!(e.to_string().contains("nonzero"), "{e}");
}
