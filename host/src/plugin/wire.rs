//! Host batches ↔ the WIT `batch` record (JSON buffer + offsets, or one Arrow
//! IPC stream).

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
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
            let rb = ipc_batch(&b.data)?;
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

pub fn ipc_batch(bytes: &[u8]) -> Result<RecordBatch, String> {
    let r = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    let schema = r.schema();
    let batches: Vec<RecordBatch> = r.collect::<Result<_, _>>().map_err(|e| format!("invalid Arrow IPC stream: {e}"))?;
    match batches.len() {
        1 => Ok(batches.into_iter().next().expect("one")),
        _ => arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string()),
    }
}
