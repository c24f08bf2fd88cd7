//! Host-side conversion between the two batch formats. The runtime calls it
//! only where neighbouring nodes disagree on the format (a visible cost that
//! `sluice validate` reports), and for DLQ entries of Arrow records.
//!
//! JSON documents carry timestamps as ISO 8601 UTC with `Z`; going back, a
//! string column whose values all read as timestamps becomes
//! `Timestamp(Millisecond, "UTC")`, so Arrow → JSON → Arrow keeps time typed.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::writer::LineDelimited;
use arrow::json::{ReaderBuilder, WriterBuilder};

use crate::batch::{Batch, BatchData, Format, JsonRecords};
use crate::batch::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot encode an Arrow batch as JSON: {0}")]
    ToJson(ArrowError),
    #[error("cannot decode JSON records into Arrow: {0}")]
    ToArrow(ArrowError),
    /// Only the strict conversions of the unit tests fail a whole batch; the
    /// pipeline converts leniently and dead-letters what does not convert.
    #[cfg(test)]
    #[error("record {index} cannot become an Arrow row: {message}")]
    BadRecord { index: usize, message: String },
}

/// One JSON document per record; nulls are written as `null` so every
/// document has every column.
pub fn arrow_to_json(batch: &RecordBatch) -> Result<JsonRecords, ConvertError> {
    let mut w = WriterBuilder::new()
        .with_explicit_nulls(true)
        // Zone-less timestamps are UTC by the contract; say so with Z.
        .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.fZ".to_owned())
        .build::<_, LineDelimited>(Vec::with_capacity(batch.num_rows() * 256));
    w.write(batch).map_err(ConvertError::ToJson)?;
    w.finish().map_err(ConvertError::ToJson)?;
    let mut buf = w.into_inner();

    // LineDelimited ends each document with '\n' (strings escape theirs);
    // drop the separators in place and record where each document ends.
    let mut offsets = Vec::with_capacity(batch.num_rows() + 1);
    offsets.push(0u32);
    let mut write = 0usize;
    let mut read = 0usize;
    let ends: Vec<usize> = memchr::memchr_iter(b'\n', &buf).collect();
    for end in ends {
        buf.copy_within(read..end, write);
        write += end - read;
        read = end + 1;
        offsets.push(write as u32);
    }
    buf.truncate(write);
    Ok(JsonRecords { buf, offsets })
}

/// The JSON document of one row (for dead letters). Never fails: a row that
/// cannot be encoded becomes an object saying why.
pub fn row_json(batch: &RecordBatch, row: usize) -> Vec<u8> {
    if row >= batch.num_rows() {
        return format!(r#"{{"_unencodable":"row {row} of a batch of {}"}}"#, batch.num_rows()).into_bytes();
    }
    match arrow_to_json(&batch.slice(row, 1)) {
        Ok(j) => j.buf,
        Err(e) => serde_json::to_vec(&serde_json::json!({ "_unencodable": e.to_string() })).unwrap_or_default(),
    }
}

/// Why bytes are not one JSON value.
#[derive(Debug)]
pub enum NotJson {
    Utf8(std::str::Utf8Error),
    Syntax(serde_json::Error),
}

/// Whether `bytes` are one JSON value, checked without building it. JSON is
/// UTF-8, and serde_json skips the strings it ignores without checking
/// theirs: that is checked first, or such bytes would pass as JSON.
pub fn check_json(bytes: &[u8]) -> Result<(), NotJson> {
    std::str::from_utf8(bytes).map_err(NotJson::Utf8)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map(drop).map_err(NotJson::Syntax)
}

/// [`row_json`] of each of `rows`, rendered in one pass when they all can be.
pub fn rows_json(batch: &RecordBatch, rows: &[usize]) -> Vec<Vec<u8>> {
    let together = || -> Option<Vec<Vec<u8>>> {
        let idx = arrow::array::UInt32Array::from_iter_values(
            rows.iter().map(|&r| u32::try_from(r).ok().filter(|_| r < batch.num_rows())).collect::<Option<Vec<_>>>()?,
        );
        let picked = arrow::compute::take_record_batch(batch, &idx).ok()?;
        let docs = arrow_to_json(&picked).ok()?;
        Some((0..docs.len()).map(|i| docs.get(i).to_vec()).collect())
    };
    together().unwrap_or_else(|| rows.iter().map(|&r| row_json(batch, r)).collect())
}

/// Schema metadata key on batches whose types were inferred from JSON
/// documents (value `json`): their `Int64` columns are JSON numbers that
/// happened to be integral in this batch, which a sink fixing its schema from
/// the data must know (see `sink/parquet/schema.rs`).
pub const INFERRED_FROM: &str = "sluice.inferred_from";

/// All records as one Arrow batch with a schema inferred from them; fails
/// when any record is not a JSON object.
#[cfg(test)]
pub fn json_to_arrow(records: &JsonRecords) -> Result<RecordBatch, ConvertError> {
    let (batch, bad) = json_to_arrow_lenient(records)?;
    match bad.into_iter().next() {
        Some(r) => Err(ConvertError::BadRecord { index: r.index, message: r.message }),
        None => Ok(batch),
    }
}

/// Like [`json_to_arrow`], but records that are not JSON objects are left
/// out and returned (code `malformed`) instead of failing the batch.
pub fn json_to_arrow_lenient(records: &JsonRecords) -> Result<(RecordBatch, Vec<Rejection>), ConvertError> {
    let mut values = Vec::with_capacity(records.len());
    let mut good = Vec::with_capacity(records.buf.len() + records.len());
    let mut bad = Vec::new();
    for (index, doc) in records.iter().enumerate() {
        match serde_json::from_slice::<serde_json::Value>(doc) {
            Ok(v @ serde_json::Value::Object(_)) => {
                values.push(v);
                good.extend_from_slice(doc);
                good.push(b'\n');
            }
            Ok(other) => bad.push(malformed(index, format!("not a JSON object: {}", kind(&other)))),
            Err(e) => bad.push(malformed(index, format!("not JSON: {e}"))),
        }
    }
    let inferred = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
        .map_err(ConvertError::ToArrow)?;
    let first = records.iter().find_map(|d| serde_json::from_slice::<Ordered<serde::de::IgnoredAny>>(d).ok());
    let schema = in_document_order(inferred, first.map(|k| k.0.into_iter().map(|(key, _)| key).collect()).unwrap_or_default());
    let batch = promote_timestamps(decode(&good, values.len(), Arc::new(schema))?)?;
    let marked = batch.schema().as_ref().clone().with_metadata(std::collections::HashMap::from([(INFERRED_FROM.to_owned(), "json".to_owned())]));
    let batch = batch.with_schema(Arc::new(marked)).map_err(ConvertError::ToArrow)?;
    Ok((batch, bad))
}

/// All records decoded against a known schema (no inference, no promotion).
#[cfg(test)]
pub fn json_to_arrow_with_schema(records: &JsonRecords, schema: SchemaRef) -> Result<RecordBatch, ConvertError> {
    let mut joined = Vec::with_capacity(records.buf.len() + records.len());
    for doc in records.iter() {
        joined.extend_from_slice(doc);
        joined.push(b'\n');
    }
    decode(&joined, records.len(), schema)
}

fn decode(ndjson: &[u8], rows: usize, schema: SchemaRef) -> Result<RecordBatch, ConvertError> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.max(1))
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(ConvertError::ToArrow)?;
    let mut rest = ndjson;
    while !rest.is_empty() {
        let n = decoder.decode(rest).map_err(ConvertError::ToArrow)?;
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
    match decoder.flush().map_err(ConvertError::ToArrow)? {
        Some(b) => Ok(b),
        // Objects without keys still count as rows.
        None => RecordBatch::try_new_with_options(schema, vec![], &RecordBatchOptions::new().with_row_count(Some(rows)))
            .map_err(ConvertError::ToArrow),
    }
}

/// A JSON object's entries in the order they are written (serde_json's
/// `Map` sorts them; columns should come in the document's order). With
/// `V = IgnoredAny` only the keys are kept.
pub(crate) struct Ordered<V>(pub Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = m.next_entry()? {
                    entries.push(e);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Fields ordered as in the first document, then any others as inferred.
fn in_document_order(schema: Schema, order: Vec<String>) -> Schema {
    let mut fields: Vec<Option<Field>> = schema.fields().iter().map(|f| Some(f.as_ref().clone())).collect();
    let mut out = Vec::with_capacity(fields.len());
    for k in order {
        if let Some(slot) = fields.iter_mut().find(|f| f.as_ref().is_some_and(|f| f.name() == &k)) {
            out.extend(slot.take());
        }
    }
    out.extend(fields.into_iter().flatten());
    Schema::new(out)
}

fn malformed(index: usize, message: String) -> Rejection {
    Rejection { index, code: "malformed".into(), message }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && (b[10] == b'T' || b[10] == b' ') && b[13] == b':'
}

/// String columns whose every value is an ISO timestamp become timestamps.
fn promote_timestamps(batch: RecordBatch) -> Result<RecordBatch, ConvertError> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut changed = false;
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        if let Some(s) = col.as_any().downcast_ref::<arrow::array::StringArray>() {
            let first = s.iter().flatten().next();
            if first.is_some_and(looks_like_timestamp) {
                let opts = CastOptions { safe: true, ..Default::default() };
                let cast = cast_with_options(col, &ts, &opts).map_err(ConvertError::ToArrow)?;
                if cast.null_count() == col.null_count() {
                    fields.push(f.as_ref().clone().with_data_type(ts.clone()));
                    columns.push(cast);
                    changed = true;
                    continue;
                }
            }
        }
        fields.push(f.as_ref().clone());
        columns.push(col.clone());
    }
    if !changed {
        return Ok(batch);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(ConvertError::ToArrow)
}

/// The batch in `fmt`; records that cannot be converted fail the call.
#[cfg(test)]
pub fn to_format(batch: Batch, fmt: Format) -> Result<Batch, ConvertError> {
    let (converted, bad) = to_format_lenient(batch, fmt)?;
    match bad.into_iter().next() {
        Some(r) => Err(ConvertError::BadRecord { index: r.index, message: r.message }),
        None => Ok(converted),
    }
}

/// The batch in `fmt`, without the records that cannot be converted; those
/// are returned (index into the input batch, code `malformed`) for the DLQ.
pub fn to_format_lenient(batch: Batch, fmt: Format) -> Result<(Batch, Vec<Rejection>), ConvertError> {
    match (batch.data, fmt) {
        (data @ BatchData::Json(_), Format::Json) | (data @ BatchData::Arrow(_), Format::Arrow) => {
            Ok((Batch { data, ..batch }, Vec::new()))
        }
        (BatchData::Arrow(b), Format::Json) => {
            Ok((Batch { origin: batch.origin, meta: batch.meta, data: BatchData::Json(arrow_to_json(&b)?) }, Vec::new()))
        }
        (BatchData::Json(j), Format::Arrow) => {
            let (b, bad) = json_to_arrow_lenient(&j)?;
            let meta = if bad.is_empty() {
                batch.meta
            } else {
                let mut skip = bad.iter().map(|r| r.index).peekable();
                let mut kept = Vec::with_capacity(b.num_rows());
                for (i, m) in batch.meta.into_iter().enumerate() {
                    if skip.peek() == Some(&i) {
                        skip.next();
                    } else {
                        kept.push(m);
                    }
                }
                kept
            };
            Ok((Batch { origin: batch.origin, meta, data: BatchData::Arrow(b) }, bad))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Origin, RecordMeta};
    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::Field;

    fn sample() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("pickupDate", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("passengerCount", DataType::Int64, true),
            Field::new("gcDistance", DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["id0000001", "id\"2\n", "id0000003"])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_457_976_295_000, 1_457_976_295_120, 0]).with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(vec![Some(1), None, Some(6)])),
                Arc::new(Float64Array::from(vec![Some(2.5), Some(0.0), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn arrow_to_json_writes_one_document_per_record() {
        let j = arrow_to_json(&sample()).unwrap();
        assert_eq!(j.len(), 3);
        let docs: Vec<serde_json::Value> = j.iter().map(|d| serde_json::from_slice(d).unwrap()).collect();
        assert_eq!(docs[0]["pickupDate"], "2016-03-14T17:24:55Z");
        assert_eq!(docs[1]["pickupDate"], "2016-03-14T17:24:55.120Z");
        assert_eq!(docs[1]["id"], "id\"2\n");
        assert_eq!(docs[1]["passengerCount"], serde_json::Value::Null);
        assert_eq!(docs[2]["gcDistance"], serde_json::Value::Null);
        assert_eq!(docs[0]["gcDistance"], 2.5);
        assert!(!j.buf.contains(&b'\n'));
        let one: serde_json::Value = serde_json::from_slice(&row_json(&sample(), 2)).unwrap();
        // Several rows at once render as each would alone; a row out of range
        // gets the same note as from `row_json`.
        let b = sample();
        for rows in [vec![2, 0], vec![1], vec![0, 9]] {
            let each: Vec<Vec<u8>> = rows.iter().map(|&r| row_json(&b, r)).collect();
            assert_eq!(rows_json(&b, &rows), each, "{rows:?}");
        }
        assert_eq!(one["pickupDate"], "1970-01-01T00:00:00Z");
        assert_eq!(one["id"], "id0000003");
    }

    #[test]
    fn round_trip_arrow_json_arrow_keeps_values_and_types() {
        let original = sample();
        let back = json_to_arrow(&arrow_to_json(&original).unwrap()).unwrap();
        assert_eq!(back.num_rows(), 3);
        // Same columns, same types (timestamps promoted back), same values.
        for f in original.schema().fields() {
            let a = original.column_by_name(f.name()).unwrap();
            let b = back.column_by_name(f.name()).unwrap();
            assert_eq!(b.data_type(), a.data_type(), "{}", f.name());
            assert_eq!(a.to_data(), b.to_data(), "{}", f.name());
        }
    }

    #[test]
    fn round_trip_json_arrow_json_keeps_documents() {
        let mut j = JsonRecords::default();
        for d in [
            r#"{"id":"a","n":1,"x":1.5,"t":"2016-03-14 17:24:55","flag":true}"#,
            r#"{"id":"b","n":null,"x":2.0,"t":"2016-03-15T01:00:00Z","flag":false}"#,
        ] {
            j.push(d.as_bytes());
        }
        let b = json_to_arrow(&j).unwrap();
        let names: Vec<&str> = b.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "n", "x", "t", "flag"]);
        assert_eq!(b.column_by_name("n").unwrap().data_type(), &DataType::Int64);
        let t = b.column_by_name("t").unwrap();
        assert!(matches!(t.data_type(), DataType::Timestamp(TimeUnit::Millisecond, Some(_))));
        let back = arrow_to_json(&b).unwrap();
        let docs: Vec<serde_json::Value> = back.iter().map(|d| serde_json::from_slice(d).unwrap()).collect();
        assert_eq!(docs[0]["t"], "2016-03-14T17:24:55Z");
        assert_eq!(docs[1]["t"], "2016-03-15T01:00:00Z");
        assert_eq!(docs[0]["n"], 1);
        assert_eq!(docs[1]["x"], 2.0);
        assert_eq!(docs[1]["flag"], false);
    }

    #[test]
    fn mixed_types_and_bad_records() {
        let mut j = JsonRecords::default();
        for d in [r#"{"p":1}"#, r#"{"p":"abc"}"#, "not json", r#"[1,2]"#, r#"{"p":3}"#] {
            j.push(d.as_bytes());
        }
        assert!(matches!(json_to_arrow(&j), Err(ConvertError::BadRecord { index: 2, .. })));
        let origin = Arc::new(Origin { source: "s".into(), partition: "p".into() });
        let meta = (0..5).map(RecordMeta::line).collect();
        let batch = Batch { origin, meta, data: BatchData::Json(j) };
        let (out, bad) = to_format_lenient(batch, Format::Arrow).unwrap();
        assert_eq!(bad.iter().map(|r| (r.index, r.code.as_str())).collect::<Vec<_>>(), [(2, "malformed"), (3, "malformed")]);
        assert_eq!(out.meta.iter().map(|m| m.seq.as_str()).collect::<Vec<_>>(), ["0", "1", "4"]);
        let BatchData::Arrow(b) = &out.data else { panic!() };
        // A number and a string in one column: the column is a string column.
        let p = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(p.iter().collect::<Vec<_>>(), [Some("1"), Some("abc"), Some("3")]);
        let json = to_format(out, Format::Json).unwrap();
        assert_eq!(json.format(), Format::Json);
        assert_eq!(json.len(), 3);
    }

    #[test]
    fn known_schema_decodes_without_inference() {
        let mut j = JsonRecords::default();
        j.push(br#"{"v":7}"#);
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, true)]));
        let b = json_to_arrow_with_schema(&j, schema).unwrap();
        assert_eq!(b.column(0).as_any().downcast_ref::<Int32Array>().unwrap().value(0), 7);
    }
}
