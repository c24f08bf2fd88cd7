//! Host batches ↔ the WIT `batch` record (JSON buffer + offsets, or one Arrow
//! IPC stream).

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;

use super::bindings::types;
use crate::batch::{BatchData, Format, JsonRecords, Rejection};


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
