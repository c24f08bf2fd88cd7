//! Dead-letter queue: NDJSON entries with stage, code, message and the original record.
//!
//! Nodes send typed [`DeadLetter`]s on their DLQ edge; the DLQ sink node
//! turns them into envelopes here (`encode`, the only place that knows the
//! format) and writes them to an NDJSON file with the same [`FileSink`] as any file output — so the DLQ gets the file sink's
//! exactly-once behaviour (truncate to the checkpointed length on recovery)
//! and its protection of output it does not know (a non-empty DLQ file that
//! the checkpoint has no commit for is refused, never emptied).

use std::path::Path;

use serde::Serialize;

use super::file::FileSink;
use super::{Sink, SinkError};
use crate::config::model::DlqSpec;
use crate::s3::S3Url;
use crate::batch::{Batch, BatchData, JsonRecords};
use crate::dead_letter::DeadLetter;

/// One dead letter, as written, but for its `record` (see [`entry`]).
#[derive(Debug, Serialize)]
struct Entry<'a> {
    /// The node that rejected the record (`stages.validate`, `sinks.lake`, ...).
    stage: &'a str,
    code: &'a str,
    message: &'a str,
    source: &'a str,
    partition: &'a str,
    seq: &'a str,
    sub: u32,
    /// RFC 3339 UTC, when the DLQ sink received the dead letter.
    time: &'a str,
}

/// The serialized envelope of one dead letter (one JSON object, no newline).
/// Its last key, `record`, is the record as JSON when it is JSON (as it
/// arrived: key order and numbers untouched), else its text (lossy UTF-8).
fn entry(d: &DeadLetter, time: &str) -> Vec<u8> {
    let e = Entry {
        stage: &d.node,
        code: &d.code,
        message: &d.message,
        source: &d.origin.source,
        partition: &d.origin.partition,
        seq: &d.meta.seq,
        sub: d.meta.sub,
        time,
    };
    let mut out = Vec::with_capacity(192 + d.record.len());
    serde_json::to_writer(&mut out, &e).expect("a dead letter always serializes");
    out.pop(); // the object's closing brace: `record` follows
    out.extend_from_slice(b",\"record\":");
    let is_json = crate::convert::check_json(&d.record).is_ok();
    if is_json && memchr::memchr2(b'\n', b'\r', &d.record).is_none() {
        // Checked without building it: no per-record tree of allocations.
        out.extend_from_slice(d.record.trim_ascii());
    } else if is_json {
        // Line breaks between tokens would split the NDJSON line.
        let v: serde_json::Value = serde_json::from_slice(&d.record).expect("checked above");
        serde_json::to_writer(&mut out, &v).expect("a JSON value serializes");
    } else {
        serde_json::to_writer(&mut out, &String::from_utf8_lossy(&d.record)).expect("a string serializes");
    }
    out.push(b'}');
    out
}

/// Dead letters as the batch of NDJSON envelopes the DLQ file gets (None
/// when there are none). Each keeps its record's provenance in `meta`.
pub fn encode(letters: &[DeadLetter]) -> Option<Batch> {
    let first = letters.first()?;
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let docs: Vec<Vec<u8>> = letters.iter().map(|d| entry(d, &time)).collect();
    let mut json = JsonRecords::with_capacity(docs.len(), docs.iter().map(Vec::len).sum());
    docs.iter().for_each(|d| json.push(d));
    let meta = letters.iter().map(|d| d.meta.clone()).collect();
    Some(Batch { origin: first.origin.clone(), meta, data: BatchData::Json(json) })
}

/// The DLQ sink (`name` appears in its errors and logs): an NDJSON file
/// sink, or NDJSON objects in S3 (`super::dlq_s3`) for an `s3://` path.
pub fn dlq_sink(name: &str, spec: &DlqSpec) -> Result<Box<dyn Sink>, SinkError> {
    match S3Url::parse(&spec.path) {
        Ok(url) => Ok(Box::new(super::dlq_s3::S3DlqSink::new(name, url, &spec.s3()))),
        Err(_) => Ok(Box::new(FileSink::create(name, Path::new(&spec.path))?)),
    }
}

/// What the DLQ's `path` and S3 keys are refused for (pure).
pub fn check(spec: &DlqSpec) -> Result<(), (&'static str, String)> {
    if spec.path.starts_with("s3://") {
        S3Url::parse(&spec.path).map_err(|m| ("path", m))?;
    } else {
        super::file::check_path(&spec.path, "the DLQ").map_err(|m| ("path", m))?;
    }
    spec.s3().check(&spec.path).map_err(|(k, m)| (k.unwrap_or("path"), m))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::batch::{Origin, RecordMeta};
    use std::sync::Arc;

    #[test]
    fn entry_embeds_json_records_and_quotes_other_text() {
        let origin = Arc::new(Origin { source: "sources.trips".into(), partition: "trips.csv".into() });
        let meta = RecordMeta { sub: 2, ..RecordMeta::line(42) };
        let letters = [
            DeadLetter::unparsed("stages.validate", &origin, meta.clone(), br#"{"id":"id0000042"}"#.to_vec(), "bad_duration", "dropoff before pickup"),
            DeadLetter::unparsed("sources.trips", &origin, meta.clone(), b"id1,2,\xff".to_vec(), "malformed", "3 fields, expected 14"),
        ];
        let batch = encode(&letters).expect("a batch");
        assert_eq!(batch.meta, [meta.clone(), meta.clone()]);
        let BatchData::Json(j) = &batch.data else { panic!("JSON envelopes") };
        let v: serde_json::Value = serde_json::from_slice(j.get(0)).unwrap();
        assert_eq!(v["stage"], "stages.validate");
        assert_eq!(v["code"], "bad_duration");
        assert_eq!(v["message"], "dropoff before pickup");
        assert_eq!(v["source"], "sources.trips");
        assert_eq!(v["partition"], "trips.csv");
        assert_eq!(v["seq"], "42");
        assert_eq!(v["sub"], 2);
        assert_eq!(v["record"]["id"], "id0000042");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
        let t = v["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");

        // Line breaks inside a JSON record's whitespace never reach the file.
        let pretty = DeadLetter::unparsed("sources.k", &origin, meta.clone(), b"{\n  \"a\": 1\n}".to_vec(), "x", "y");
        let pretty = encode(&[pretty]).expect("a batch");
        let BatchData::Json(p) = &pretty.data else { panic!("JSON envelopes") };
        assert!(!p.get(0).contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(p.get(0)).unwrap();
        assert_eq!(v["record"]["a"], 1);

        // JSON syntax around bytes that are not UTF-8 is text, not JSON.
        let odd = DeadLetter::unparsed("sources.k", &origin, meta.clone(), b"{\"a\":\"\xff\"}".to_vec(), "x", "y");
        let odd = encode(&[odd]).expect("a batch");
        let BatchData::Json(o) = &odd.data else { panic!("JSON envelopes") };
        let v: serde_json::Value = serde_json::from_slice(o.get(0)).expect("the entry is UTF-8 JSON");
        assert_eq!(v["record"], "{\"a\":\"\u{fffd}\"}");

        let text = j.get(1);
        let v: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(v["record"], "id1,2,\u{fffd}");
        assert!(!text.contains(&b'\n'));
        assert!(encode(&[]).is_none());
    }
}
