//! Input rows → Kinesis records: CSV (with a header) or NDJSON, read on a
//! blocking thread and handed over through a bounded channel.
//!
//! CSV rows become JSON objects with the header's field names: numeric
//! columns become JSON numbers when they parse and stay strings when they do
//! not (so validate can reject them), empty cells are omitted. A row with the
//! wrong number of cells is sent as its raw text, which validate rejects as
//! malformed. The partition key is the trip id (`line-N` when a row has none).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use tokio::sync::mpsc;

/// Columns of the taxi schema that are numbers.
const NUMERIC: &[&str] = &[
    "vendorId",
    "passengerCount",
    "pickupLongitude",
    "pickupLatitude",
    "dropoffLongitude",
    "dropoffLatitude",
    "gcDistance",
    "tripDuration",
    "googleDistance",
    "googleDuration",
];

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
                let n = lines.read_until(b'\n', &mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
            let mut csv = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(reader);
            let headers: Vec<String> = csv
                .byte_headers()
                .map_err(|e| format!("cannot read the CSV header of {}: {e}", path.display()))?
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
                .collect();
            let numeric: Vec<bool> = headers.iter().map(|h| NUMERIC.contains(&h.as_str())).collect();
            let mut row = csv::ByteRecord::new();
            let mut line_no = 1u64;
            loop {
                match csv.read_byte_record(&mut row) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => return Err(format!("cannot read {} after line {line_no}: {e}", path.display())),
                }
                line_no = row.position().map_or(line_no + 1, |p| p.line());
                if !emit(csv_item(&headers, &numeric, &row, line_no)) {
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

fn csv_item(headers: &[String], numeric: &[bool], row: &csv::ByteRecord, line_no: u64) -> Item {
    if row.len() != headers.len() {
        // Not a row of this file's shape: send its text for validate to reject.
        let raw: Vec<&[u8]> = row.iter().collect();
        let key = row.get(0).map(|id| String::from_utf8_lossy(id).into_owned()).filter(|k| !k.is_empty());
        return Item { key: key.unwrap_or_else(|| format!("line-{line_no}")), data: raw.join(&b","[..]) };
    }
    let mut obj = Map::new();
    for ((name, cell), &is_num) in headers.iter().zip(row.iter()).zip(numeric) {
        if cell.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(cell).into_owned();
        let value = if is_num { number(&text).unwrap_or(Value::String(text)) } else { Value::String(text) };
        obj.insert(name.clone(), value);
    }
    let key = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => format!("line-{line_no}"),
    };
    Item { key, data: serde_json::to_vec(&Value::Object(obj)).expect("a JSON object serializes") }
}

fn number(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(Value::Number(i.into()));
    }
    t.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(content: &str, format: InputFormat) -> Vec<Item> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        let (tx, mut rx) = mpsc::channel(1000);
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
        let csv = "id,vendorId,pickupDate,passengerCount,pickupLongitude,gcDistance,storeAndFwdFlag\n\
                   id0000001,2,2016-03-14 17:24:55,1,-73.98,,N\n\
                   id0000002,x,2016-03-14 17:24:55,1,-73.98,1.5,N\n\
                   id0000003,2,2016-03-14\n";
        let items = read_all(csv, InputFormat::Csv);
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].key, "id0000001");
        let v: Value = serde_json::from_slice(&items[0].data).unwrap();
        assert_eq!(v["vendorId"], 2);
        assert_eq!(v["pickupLongitude"], -73.98);
        assert_eq!(v["pickupDate"], "2016-03-14 17:24:55");
        assert_eq!(v["storeAndFwdFlag"], "N");
        assert!(v.get("gcDistance").is_none(), "empty cells are omitted");
        let v: Value = serde_json::from_slice(&items[1].data).unwrap();
        assert_eq!(v["vendorId"], "x", "unparseable numbers stay strings");
        assert_eq!(v["gcDistance"], 1.5);
        // A short row goes out as its text.
        assert_eq!(items[2].data, b"id0000003,2,2016-03-14");
        assert!(serde_json::from_slice::<Value>(&items[2].data).is_err());
    }

    #[test]
    fn ndjson_lines_pass_through_keyed_by_id() {
        let items = read_all("{\"id\":\"a1\",\"n\":1}\n\n{\"id\":7}\r\nnot json\n\"just a string\"\n", InputFormat::Ndjson);
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
