//! Input rows → Kinesis records: CSV (with a header) or NDJSON, read on a
//! blocking thread and handed over through a bounded channel.
//!
//! CSV rows become JSON objects with the header's field names, each cell
//! typed by the file source's rule (`source::file::typing::classify`):
//! numbers become JSON numbers, booleans booleans, empty cells are omitted,
//! everything else (ids with leading zeros included) stays text. Unlike the
//! file source there is no column type: every record is a document of its
//! own, and produce has no DLQ, so a stray text cell stays text in its own
//! record only and the consuming pipeline judges it. A row with the wrong
//! number of cells or an unterminated quote (CSV is read line by line) is
//! sent as its raw text. The partition key is the record's `id` (`line-N`
//! when a row has none).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::source::file::lines::{CsvRecords, Next};
use crate::source::file::typing;

/// Larger records are refused (Kinesis's limit is 1 MiB per record).
const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    Csv,
    Ndjson,
}

impl InputFormat {
    /// `.csv` (any case) is CSV, anything else NDJSON.
    pub fn from_path(p: &Path) -> Self {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => InputFormat::Csv,
            _ => InputFormat::Ndjson,
        }
    }
}

/// One user record.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: String,
    pub data: Vec<u8>,
}

/// Counts bytes as they are read, for the progress display.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads `path` on the calling (blocking) thread, sending items until the
/// file ends, `limit` items were sent, or the receiver is dropped.
pub fn read_into(
    path: &Path,
    format: InputFormat,
    limit: Option<u64>,
    bytes_read: Arc<AtomicU64>,
    tx: mpsc::Sender<Item>,
) -> Result<u64, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader = Counting { inner: file, read: bytes_read };
    let mut sent = 0u64;
    let limit = limit.unwrap_or(u64::MAX);
    let mut emit = |item: Item| -> bool {
        if sent >= limit || tx.blocking_send(item).is_err() {
            return false;
        }
        sent += 1;
        sent < limit
    };
    match format {
        InputFormat::Ndjson => {
            let mut lines = BufReader::with_capacity(1 << 16, reader);
            let mut buf = Vec::new();
            let mut line_no = 0u64;
            loop {
                buf.clear();
                let n =
                    lines.read_until(b'\n', &mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if !emit(ndjson_item(&buf, line_no)) {
                    break;
                }
            }
        }
        InputFormat::Csv => {
            let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
            let mut records = CsvRecords::new(BufReader::with_capacity(1 << 16, reader), MAX_RECORD_BYTES, false, 0);
            let headers = match records.next().map_err(cannot)? {
                None => return Ok(0),
                Some(Next { outcome: Ok(()), .. }) => {
                    records.fields().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect::<Vec<_>>()
                }
                Some(Next { outcome: Err(bad), .. }) => {
                    return Err(format!("cannot read the CSV header of {}: {}", path.display(), bad.message))
                }
            };
            while let Some(n) = records.next().map_err(cannot)? {
                let item = match n.outcome {
                    Ok(()) => csv_item(&headers, &records, n.line),
                    Err(bad) if bad.code == "too_large" => {
                        return Err(format!(
                            "{} line {}: {}; Kinesis takes at most 1 MiB per record",
                            path.display(),
                            n.line,
                            bad.message
                        ))
                    }
                    // Not a row of this file's shape: send its text for the pipeline to reject.
                    Err(_) => raw_item(records.raw(), None, n.line),
                };
                if !emit(item) {
                    break;
                }
            }
        }
    }
    Ok(sent)
}

fn ndjson_item(line: &[u8], line_no: u64) -> Item {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Value>,
    }
    let key = match serde_json::from_slice::<IdOnly>(line) {
        Ok(IdOnly { id: Some(Value::String(s)) }) if !s.is_empty() => s,
        Ok(IdOnly { id: Some(Value::Number(n)) }) => n.to_string(),
        _ => format!("line-{line_no}"),
    };
    Item { key, data: line.to_vec() }
}

fn raw_item(raw: &[u8], key: Option<&[u8]>, line_no: u64) -> Item {
    let key = key.map(|id| String::from_utf8_lossy(id).into_owned()).filter(|k| !k.is_empty());
    Item { key: key.unwrap_or_else(|| format!("line-{line_no}")), data: raw.to_vec() }
}

fn csv_item<R: BufRead>(headers: &[String], row: &CsvRecords<R>, line_no: u64) -> Item {
    if row.len() != headers.len() {
        return raw_item(row.raw(), row.fields().next(), line_no);
    }
    let mut obj = Map::new();
    for (name, cell) in headers.iter().zip(row.fields()) {
        let text = String::from_utf8_lossy(cell);
        // Each record is a document of its own: each cell is typed on its own
        // (a "two" in one row must not turn every other row's 2 into text).
        let value = match typing::classify(&text).and_then(|ty| typing::parse(ty, &text)) {
            Some(c) => typing::to_value(c),
            None => None,
        };
        if let Some(v) = value {
            obj.insert(name.clone(), v);
        }
    }
    let key = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("line-{line_no}"),
    };
    Item { key, data: serde_json::to_vec(&Value::Object(obj)).expect("a JSON object serializes") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(content: &str, format: InputFormat) -> Vec<Item> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        let (tx, mut rx) = mpsc::channel(4096);
        let n = read_into(f.path(), format, None, Arc::default(), tx).unwrap();
        let mut out = Vec::new();
        while let Ok(i) = rx.try_recv() {
            out.push(i);
        }
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn csv_rows_become_json_with_numbers() {
        let csv = "id,vendorId,pickupDate,passengerCount,pickupLongitude,gcDistance,storeAndFwdFlag,zip\n\
                   id0000001,2,2016-03-14 17:24:55,1,-73.98,,N,02134\n\
                   id0000002,x,2016-03-14 17:24:55,1,-73.98,1.5,N,10001\n\
                   id0000003,2,2016-03-14\n\
                   id0000004,\"stray,2,2016-03-14 17:24:55,1,-73.98,1.5,N,10001\n";
        let items = read_all(csv, InputFormat::Csv);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].key, "id0000001");
        let v: Value = serde_json::from_slice(&items[0].data).unwrap();
        assert_eq!(v["passengerCount"], 1);
        assert_eq!(v["pickupLongitude"], -73.98);
        assert_eq!(v["pickupDate"], "2016-03-14 17:24:55");
        assert_eq!(v["storeAndFwdFlag"], "N");
        assert!(v.get("gcDistance").is_none(), "empty cells are omitted");
        // Each cell on its own: "x" in another row does not make this 2 text.
        assert_eq!(v["vendorId"], 2);
        assert_eq!(v["zip"], "02134");
        let v: Value = serde_json::from_slice(&items[1].data).unwrap();
        assert_eq!(v["vendorId"], "x");
        assert_eq!(v["gcDistance"], 1.5);
        // Per cell, with no column type: 10001 reads as a number (send NDJSON to control types).
        assert_eq!(v["zip"], 10001);
        // A short row, and a row with a stray quote, go out as their text (one line each).
        assert_eq!(items[2].data, b"id0000003,2,2016-03-14");
        assert!(serde_json::from_slice::<Value>(&items[2].data).is_err());
        assert_eq!(items[3].key, "line-5");
        assert!(items[3].data.starts_with(b"id0000004,\"stray"));
    }

    #[test]
    fn a_text_cell_among_numbers_stays_text_in_its_own_record_only() {
        let mut csv = String::from("id,n\n");
        for i in 0..3 {
            csv.push_str(&format!("r{i},{i}\n"));
        }
        csv.push_str("last,n/a\n");
        let items = read_all(&csv, InputFormat::Csv);
        let first: Value = serde_json::from_slice(&items[0].data).unwrap();
        let last: Value = serde_json::from_slice(&items[3].data).unwrap();
        assert_eq!((first["n"].clone(), last["n"].clone()), (Value::from(0), Value::from("n/a")));
    }

    #[test]
    fn ndjson_lines_pass_through_keyed_by_id() {
        let items =
            read_all("{\"id\":\"a1\",\"n\":1}\n\n{\"id\":7}\r\nnot json\n\"just a string\"\n", InputFormat::Ndjson);
        let keys: Vec<_> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, vec!["a1", "7", "line-4", "line-5"]);
        assert_eq!(items[0].data, b"{\"id\":\"a1\",\"n\":1}");
        assert_eq!(items[2].data, b"not json");
    }

    #[test]
    fn limit_and_format_from_extension() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n").unwrap();
        let (tx, _rx) = mpsc::channel(10);
        assert_eq!(read_into(f.path(), InputFormat::Ndjson, Some(2), Arc::default(), tx).unwrap(), 2);
        assert_eq!(InputFormat::from_path(Path::new("x/trips.CSV")), InputFormat::Csv);
        assert_eq!(InputFormat::from_path(Path::new("trips.ndjson")), InputFormat::Ndjson);
    }
}
