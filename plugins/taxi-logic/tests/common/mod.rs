//! Test inputs in both forms from the same CSV-like rows, and a way to compare
//! a typed record batch with JSON-form output.
#![allow(dead_code)]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde_json::{Map, Value};
use taxi_logic::rules::FIELDS;
use taxi_logic::time::format_iso;

pub const HEADER: [&str; 14] = [
    "id", "vendorId", "pickupDate", "dropoffDate", "passengerCount", "pickupLongitude", "pickupLatitude",
    "dropoffLongitude", "dropoffLatitude", "storeAndFwdFlag", "gcDistance", "tripDuration", "googleDistance",
    "googleDuration",
];

/// One CSV row: `None` = column absent from the JSON document / null cell.
pub type Row = [Option<String>; 14];

pub fn good(i: usize) -> Row {
    let cells = [
        format!("id{i:07}"),
        format!("{}", 1 + i % 2),
        format!("2016-03-{:02} {:02}:{:02}:{:02}", 1 + i % 28, i % 24, i % 50, (i * 7) % 60),
        format!("2016-03-{:02} {:02}:{:02}:{:02}", 1 + i % 28, i % 24, i % 50 + 1 + i % 9, (i * 7) % 60),
        format!("{}", 1 + i % 6),
        format!("{:.6}", -73.98 + (i % 100) as f64 * 0.001),
        format!("{:.6}", 40.75 + (i % 50) as f64 * 0.001),
        format!("{:.6}", -73.95 - (i % 70) as f64 * 0.001),
        format!("{:.6}", 40.70 + (i % 30) as f64 * 0.002),
        if i.is_multiple_of(10) { "Y".to_owned() } else { "N".to_owned() },
        if i.is_multiple_of(3) { format!("{:.3}", 1.5 + i as f64 % 7.0) } else { String::new() },
        if i.is_multiple_of(4) { format!("{}", 60 + i % 1000) } else { String::new() },
        if i.is_multiple_of(5) { "3.25".to_owned() } else { String::new() },
        String::new(),
    ];
    cells.map(Some)
}

pub fn with(mut row: Row, field: &str, value: Option<&str>) -> Row {
    let i = HEADER.iter().position(|h| *h == field).expect("known field");
    row[i] = value.map(str::to_owned);
    row
}

/// JSON documents with every present value as a string (what a CSV-derived record looks like).
pub fn json_docs(rows: &[Row]) -> (Vec<u8>, Vec<u32>) {
    let docs: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (h, v) in HEADER.iter().zip(r) {
                if let Some(v) = v {
                    m.insert((*h).to_owned(), Value::String(v.clone()));
                }
            }
            serde_json::to_vec(&Value::Object(m)).unwrap()
        })
        .collect();
    pack(&docs)
}

pub fn pack(docs: &[Vec<u8>]) -> (Vec<u8>, Vec<u32>) {
    let mut buf = Vec::new();
    let mut offsets = vec![0u32];
    for d in docs {
        buf.extend_from_slice(d);
        offsets.push(buf.len() as u32);
    }
    (buf, offsets)
}

/// All-Utf8 batch, as a CSV reader without type inference produces; `None` is a null cell.
pub fn utf8_batch(rows: &[Row]) -> RecordBatch {
    let fields: Vec<Field> = HEADER.iter().map(|h| Field::new(*h, DataType::Utf8, true)).collect();
    let cols: Vec<ArrayRef> = (0..14)
        .map(|c| Arc::new(rows.iter().map(|r| r[c].clone()).collect::<StringArray>()) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// A typed batch row as the JSON form writes it (ISO timestamps, nulls kept).
pub fn batch_rows(b: &RecordBatch) -> Vec<Value> {
    (0..b.num_rows())
        .map(|i| {
            let mut m = Map::new();
            for (f, col) in b.schema().fields().iter().zip(b.columns()) {
                m.insert(f.name().clone(), cell(col, i));
            }
            Value::Object(m)
        })
        .collect()
}

fn cell(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Utf8 => Value::from(a.as_string::<i32>().value(i)),
        DataType::Int32 => Value::from(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Value::from(a.as_primitive::<Float64Type>().value(i)),
        DataType::Timestamp(..) => Value::from(format_iso(a.as_primitive::<TimestampMillisecondType>().value(i))),
        other => panic!("unexpected output type {other}"),
    }
}

pub fn json_rows(out: &taxi_logic::Out) -> Vec<Value> {
    (0..out.len()).map(|i| serde_json::from_slice(out.record(i)).unwrap()).collect()
}

pub fn codes(rejected: &[taxi_logic::Rejection]) -> Vec<(u32, &str)> {
    rejected.iter().map(|r| (r.index, r.code.as_str())).collect()
}

pub fn field_count() -> usize {
    FIELDS.len()
}
