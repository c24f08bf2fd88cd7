//! Host batches ↔ the WIT `batch` record (JSON buffer + offsets, or one Arrow
//! IPC stream).

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;

use super::bindings::types;
use crate::batch::{BatchData, Format, JsonRecords, Rejection};
use crate::convert::NotJson;


pub fn from_wit_format(f: types::Format) -> Format {
    match f {
        types::Format::Json => Format::Json,
        types::Format::Arrow => Format::Arrow,
    }
}

/// A plugin's rejection as the host's one record-failure type (the WIT type
/// stays at this boundary).
pub fn from_wit_rejection(r: types::Rejection) -> Rejection {
    Rejection { index: r.index as usize, code: r.code, message: r.message }
}

pub fn encode(data: &BatchData) -> Result<types::Batch, String> {
    Ok(match data {
        BatchData::Json(j) => types::Batch { format: types::Format::Json, data: j.buf.clone(), offsets: j.offsets.clone() },
        BatchData::Arrow(b) => types::Batch { format: types::Format::Arrow, data: ipc_bytes(b)?, offsets: Vec::new() },
    })
}

/// Decode a plugin's output; returns the data and its record count.
pub fn decode(b: types::Batch) -> Result<(BatchData, usize), String> {
    match b.format {
        types::Format::Json => {
            let j = JsonRecords { buf: b.data, offsets: if b.offsets.is_empty() { vec![0] } else { b.offsets } };
            if j.offsets[0] != 0 || j.offsets.windows(2).any(|w| w[0] > w[1]) || *j.offsets.last().unwrap_or(&0) as usize > j.buf.len() {
                return Err("json batch offsets are not increasing from 0 within the buffer".into());
            }
            let n = j.len();
            Ok((BatchData::Json(j), n))
        }
        types::Format::Arrow => {
            let rb = ipc_batch(b.data)?;
            let n = rb.num_rows();
            Ok((BatchData::Arrow(rb), n))
        }
    }
}

/// Why a JSON document a plugin returned cannot be a record downstream:
/// not UTF-8, not JSON, not an object, or on several lines (sinks write
/// NDJSON). `None` when it can.
pub fn json_record_problem(doc: &[u8]) -> Option<String> {
    match crate::convert::check_json(doc) {
        Err(NotJson::Utf8(_)) => return Some("a record that is not UTF-8".into()),
        Err(NotJson::Syntax(e)) => return Some(format!("a record that is not JSON ({e})")),
        Ok(()) => {}
    }
    if !doc.trim_ascii_start().starts_with(b"{") {
        return Some("a record that is not a JSON object".into());
    }
    if memchr::memchr2(b'\n', b'\r', doc).is_some() {
        return Some("a record on several lines (records are one line of JSON each)".into());
    }
    None
}

/// The documents of `j` that can be records, with their origins; for the
/// others, (origin, why). No copy when every document passes.
pub fn keep_json_objects(j: JsonRecords, origin: Vec<u32>) -> (JsonRecords, Vec<u32>, Vec<(u32, String)>) {
    let problems: Vec<(usize, String)> =
        j.iter().enumerate().filter_map(|(k, d)| json_record_problem(d).map(|m| (k, m))).collect();
    if problems.is_empty() {
        return (j, origin, Vec::new());
    }
    let mut kept = JsonRecords::with_capacity(j.len() - problems.len(), j.buf.len());
    let mut kept_origin = Vec::with_capacity(origin.len() - problems.len());
    let mut bad = problems.iter().peekable();
    for (k, doc) in j.iter().enumerate() {
        if bad.next_if(|(b, _)| *b == k).is_none() {
            kept.push(doc);
            kept_origin.push(origin[k]);
        }
    }
    let bad = problems.into_iter().map(|(k, m)| (origin[k], m)).collect();
    (kept, kept_origin, bad)
}

pub fn ipc_bytes(b: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(b.get_array_memory_size() + 1024);
    let mut w = StreamWriter::try_new(&mut out, &b.schema()).map_err(|e| e.to_string())?;
    w.write(b).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

/// A plugin's Arrow IPC stream as one batch. The arrays wrap `bytes`
/// without a copy, and are validated: the bytes come from a plugin.
pub fn ipc_batch(bytes: Vec<u8>) -> Result<RecordBatch, String> {
    let bad = |e: arrow::error::ArrowError| format!("invalid Arrow IPC stream: {e}");
    let mut buf = arrow::buffer::Buffer::from_vec(bytes);
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::with_capacity(1);
    while !buf.is_empty() {
        if let Some(b) = decoder.decode(&mut buf).map_err(bad)? {
            batches.push(b);
        }
    }
    decoder.finish().map_err(bad)?;
    let schema = decoder.schema().ok_or("invalid Arrow IPC stream: no schema")?;
    match batches.len() {
        1 => Ok(batches.pop().expect("one")),
        _ => arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_line_json_objects_pass_as_records() {
        let docs: [&[u8]; 6] = [br#"{"a":1}"#, b"{\"a\":\"\xff\"}", b"[1]", b"{\"a\":", b"{\n\"a\": 1\n}", br#" {"b":2} "#];
        let mut j = JsonRecords::with_capacity(6, 64);
        docs.iter().for_each(|d| j.push(d));
        let (kept, origin, bad) = keep_json_objects(j, vec![10, 11, 12, 13, 14, 15]);
        assert_eq!(kept.iter().collect::<Vec<_>>(), [docs[0], docs[5]]);
        assert_eq!(origin, [10, 15]);
        let bad: Vec<u32> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(bad, [11, 12, 13, 14]);
        // All good: handed back as they were.
        let mut j = JsonRecords::with_capacity(1, 8);
        j.push(br#"{"a":1}"#);
        let (kept, origin, bad) = keep_json_objects(j, vec![3]);
        assert_eq!((kept.len(), origin, bad.len()), (1, vec![3], 0));
    }
}
