//! Turning raw text rows (CSV lines, NDJSON lines) into a batch in the format
//! the downstream stages take, so a stage never pays for a conversion the
//! source could avoid. Rows that cannot be parsed are returned for the DLQ.
//!
//! Values stay strings (CSV has no types; NDJSON numbers are kept as their
//! text): judging them is the validate plugin's job, with its codes.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};

use crate::batch::{Batch, BatchData, Format, JsonRecords, Origin, RecordMeta};

/// A row the source could not parse.
pub struct Malformed {
    pub meta: RecordMeta,
    pub raw: Vec<u8>,
    pub message: String,
}

/// Accumulates parsed rows as string fields keyed by column name.
pub struct RowBatcher {
    format: Format,
    columns: Vec<String>,
    /// Arrow: one builder per column.
    builders: Vec<StringBuilder>,
    json: JsonRecords,
    pub meta: Vec<RecordMeta>,
    pub malformed: Vec<Malformed>,
    bytes: usize,
}

impl RowBatcher {
    pub fn new(format: Format, columns: Vec<String>) -> Self {
        let builders = columns.iter().map(|_| StringBuilder::new()).collect();
        Self { format, columns, builders, json: JsonRecords::with_capacity(0, 0), meta: Vec::new(), malformed: Vec::new(), bytes: 0 }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty() && self.malformed.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Add one CSV record (already split). Empty fields are missing values.
    pub fn push_csv(&mut self, meta: RecordMeta, fields: &csv::ByteRecord, raw: &[u8]) {
        if fields.len() != self.columns.len() {
            let message = format!("expected {} CSV fields, found {}", self.columns.len(), fields.len());
            self.malformed.push(Malformed { meta, raw: raw.to_vec(), message });
            return;
        }
        let Ok(values): Result<Vec<&str>, _> = fields.iter().map(std::str::from_utf8).collect() else {
            self.malformed.push(Malformed { meta, raw: raw.to_vec(), message: "the row is not valid UTF-8".into() });
            return;
        };
        self.bytes += raw.len();
        self.push_values(meta, values.iter().map(|v| (!v.is_empty()).then_some(*v)));
    }

    /// Add CSV rows given as text, one per line; row k gets sequence
    /// number `first + k`. One parser for the whole chunk: building a CSV
    /// reader per line costs more than parsing the line.
    pub fn push_csv_text(&mut self, text: &[u8], first: u64) {
        let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
        let mut rec = csv::ByteRecord::new();
        let mut raw = Vec::with_capacity(256);
        let mut seq = first;
        loop {
            match r.read_byte_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {
                    raw.clear();
                    join_fields(&rec, &mut raw);
                    self.push_csv(RecordMeta::line(seq), &rec, &raw);
                }
                Err(e) => self.malformed.push(Malformed { meta: RecordMeta::line(seq), raw: Vec::new(), message: e.to_string() }),
            }
            seq += 1;
        }
    }

    /// Add one NDJSON line. Arrow batches get a column per known key; keys
    /// not in the header seen so far are dropped only for Arrow output (JSON
    /// output keeps the document as it is).
    pub fn push_json(&mut self, meta: RecordMeta, line: &[u8]) {
        if self.format == Format::Json {
            match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Ok(_) if line.trim_ascii_start().starts_with(b"{") => {
                    self.bytes += line.len();
                    self.json.push(line.trim_ascii());
                    self.meta.push(meta);
                }
                Ok(_) => self.malformed.push(Malformed { meta, raw: line.to_vec(), message: "the line is JSON but not an object".into() }),
                Err(e) => self.malformed.push(Malformed { meta, raw: line.to_vec(), message: format!("invalid JSON: {e}") }),
            }
            return;
        }
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(line) {
            Ok(o) => o,
            Err(e) => {
                self.malformed.push(Malformed { meta, raw: line.to_vec(), message: format!("invalid JSON object: {e}") });
                return;
            }
        };
        for k in obj.keys() {
            if !self.columns.iter().any(|c| c == k) {
                // A new column: back-fill nulls for the rows before it.
                let mut b = StringBuilder::new();
                (0..self.meta.len()).for_each(|_| b.append_null());
                self.columns.push(k.clone());
                self.builders.push(b);
            }
        }
        self.bytes += line.len();
        let texts: Vec<Option<String>> = self
            .columns
            .iter()
            .map(|c| match obj.get(c) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => Some(v.to_string()),
            })
            .collect();
        self.push_values(meta, texts.iter().map(|t| t.as_deref()));
    }

    fn push_values<'a>(&mut self, meta: RecordMeta, values: impl Iterator<Item = Option<&'a str>>) {
        match self.format {
            Format::Arrow => {
                for (b, v) in self.builders.iter_mut().zip(values) {
                    b.append_option(v);
                }
            }
            Format::Json => {
                let mut doc = Vec::with_capacity(256);
                doc.push(b'{');
                let mut first = true;
                for (c, v) in self.columns.iter().zip(values) {
                    let Some(v) = v else { continue };
                    if !first {
                        doc.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut doc, c).expect("vec write");
                    doc.push(b':');
                    serde_json::to_writer(&mut doc, v).expect("vec write");
                }
                doc.push(b'}');
                self.json.push(&doc);
            }
        }
        self.meta.push(meta);
    }

    /// Take the rows gathered so far as a batch (None when there are none)
    /// and the malformed rows.
    pub fn take(&mut self, origin: &Arc<Origin>) -> (Option<Batch>, Vec<Malformed>) {
        let malformed = std::mem::take(&mut self.malformed);
        self.bytes = 0;
        if self.meta.is_empty() {
            return (None, malformed);
        }
        let meta = std::mem::take(&mut self.meta);
        let data = match self.format {
            Format::Json => BatchData::Json(std::mem::replace(&mut self.json, JsonRecords::with_capacity(meta.len(), 0))),
            Format::Arrow => {
                let fields: Vec<Field> = self.columns.iter().map(|c| Field::new(c, DataType::Utf8, true)).collect();
                let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
                BatchData::Arrow(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("equal-length string columns"))
            }
        };
        (Some(Batch { origin: origin.clone(), meta, data }), malformed)
    }
}

/// The record as CSV text again (for the DLQ and byte accounting).
pub fn join_fields(rec: &csv::ByteRecord, out: &mut Vec<u8>) {
    for (i, f) in rec.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if f.iter().any(|&b| b == b',' || b == b'"' || b == b'\n') {
            out.push(b'"');
            for &b in f {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(f);
        }
    }
}
