//! Dead-letter queue: NDJSON entries with stage, code, message and the original record.
//!
//! Entries are built where a record is rejected (`entry`), travel as JSON
//! records on the node's DLQ edge, and end in an NDJSON file written by the
//! same [`FileSink`] as any file output — so the DLQ gets the file sink's
//! exactly-once behaviour (truncate to the checkpointed length on recovery)
//! and its protection of output it does not know (a non-empty DLQ file that
//! the checkpoint has no commit for is refused, never emptied).

use std::path::Path;

use serde::Serialize;

use super::file::FileSink;
use super::SinkError;
use crate::batch::{Batch, Origin, RecordMeta};

/// One dead letter, as written.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// The node that rejected the record (`stages.validate`, `sinks.lake`, ...).
    pub stage: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub source: &'a str,
    pub partition: &'a str,
    pub seq: &'a str,
    pub sub: u32,
    /// The record as JSON when it is JSON, else its text (lossy UTF-8).
    pub record: serde_json::Value,
    /// RFC 3339 UTC, when the entry was made.
    pub time: String,
}

/// The serialized envelope of a rejected record (one JSON object, no newline).
pub fn entry(node: &str, code: &str, message: &str, origin: &Origin, meta: &RecordMeta, record: &[u8]) -> Vec<u8> {
    let record = serde_json::from_slice(record)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(record).into_owned()));
    let e = Entry {
        stage: node,
        code,
        message,
        source: &origin.source,
        partition: &origin.partition,
        seq: &meta.seq,
        sub: meta.sub,
        record,
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    serde_json::to_vec(&e).expect("a dead letter always serializes")
}

/// Dead letters for records of `batch` picked by index, each with its
/// code and message, ready for `Outputs::dead_letters`.
pub fn entries<'a>(
    node: &str,
    batch: &Batch,
    picked: impl IntoIterator<Item = (usize, &'a str, &'a str)>,
) -> Vec<(RecordMeta, Vec<u8>)> {
    picked
        .into_iter()
        .map(|(i, code, message)| {
            let m = &batch.meta[i];
            (m.clone(), entry(node, code, message, &batch.origin, m, &batch.record_json(i)))
        })
        .collect()
}

/// The DLQ sink: an NDJSON file sink (`name` appears in its errors and logs).
pub fn dlq_sink(name: &str, path: &Path) -> Result<FileSink, SinkError> {
    FileSink::create(name, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_embeds_json_records_and_quotes_other_text() {
        let origin = Origin { source: "sources.trips".into(), partition: "trips.csv".into() };
        let meta = RecordMeta { sub: 2, ..RecordMeta::line(42) };
        let json = entry("stages.validate", "bad_duration", "dropoff before pickup", &origin, &meta, br#"{"id":"id0000042"}"#);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["stage"], "stages.validate");
        assert_eq!(v["code"], "bad_duration");
        assert_eq!(v["message"], "dropoff before pickup");
        assert_eq!(v["source"], "sources.trips");
        assert_eq!(v["partition"], "trips.csv");
        assert_eq!(v["seq"], "42");
        assert_eq!(v["sub"], 2);
        assert_eq!(v["record"]["id"], "id0000042");
        let t = v["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");

        let text = entry("sources.trips", "malformed", "3 fields, expected 14", &origin, &meta, b"id1,2,\xff");
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["record"], "id1,2,\u{fffd}");
        assert!(!text.contains(&b'\n'));
    }
}
