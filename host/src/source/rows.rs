//! Turning parsed rows (CSV records, NDJSON lines) into a batch in the format
//! the downstream stages take, so a stage never pays for a conversion the
//! source could avoid. Rows that cannot be parsed are returned for the DLQ.
//!
//! A batcher has a fixed list of typed columns (see `file::typing`): a JSON
//! document gets each cell as its type says (numbers as numbers, missing
//! cells left out) and an Arrow batch gets one typed column each, the same
//! schema for every batch. A row with a cell that does not fit its column
//! goes to the DLQ whole. The untyped form (`RowBatcher::new`, every column a
//! string) is for sources whose values a plugin judges from their text (the
//! taxi generator, `infer_rows = 0`); only there NDJSON keys not seen before
//! add columns.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringArray,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::file::typing::{self, Cell, ColumnType};
use crate::batch::{Batch, BatchData, Format, JsonRecords, Origin, RecordMeta};
use crate::convert::NotJson;
use crate::dead_letter::DeadLetter;

enum Builder {
    /// Text as bytes: a row's UTF-8 is checked once, whole, when it is
    /// added (not per cell), and the column once more when it is finished.
    Str(BinaryBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Builder::Str(BinaryBuilder::new()),
            ColumnType::Int64 => Builder::Int(Int64Builder::new()),
            ColumnType::Float64 => Builder::Float(Float64Builder::new()),
            ColumnType::Bool => Builder::Bool(BooleanBuilder::new()),
            ColumnType::Timestamp => Builder::Ts(TimestampMillisecondBuilder::new().with_timezone("UTC")),
        }
    }

    /// `cell` is of this builder's type (or missing): `parse` made it so.
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Builder::Str(b), Cell::Str(s)) => b.append_value(s.as_bytes()),
            (Builder::Int(b), Cell::Int(i)) => b.append_value(i),
            (Builder::Float(b), Cell::Float(f)) => b.append_value(f),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Ts(b), Cell::Timestamp(ms, _)) => b.append_value(ms),
            (Builder::Str(b), _) => b.append_null(),
            (Builder::Int(b), _) => b.append_null(),
            (Builder::Float(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Ts(b), _) => b.append_null(),
        }
    }

    /// The column so far; the builder starts again with room for as many
    /// rows and bytes (batches are alike: no regrowing per batch).
    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Str(b) => {
                let bytes = b.values_slice().len();
                let done = std::mem::replace(b, BinaryBuilder::with_capacity(b.len(), bytes + bytes / 8)).finish();
                let text = StringArray::try_from_binary(done).expect("every row's UTF-8 is checked when it is added");
                Arc::new(text)
            }
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// Accumulates parsed rows keyed by column name.
pub struct RowBatcher {
    format: Format,
    columns: Vec<String>,
    types: Vec<ColumnType>,
    /// Fixed types: NDJSON keys never add columns.
    typed: bool,
    /// Arrow: one builder per column.
    builders: Vec<Builder>,
    json: JsonRecords,
    pub meta: Vec<RecordMeta>,
    /// Rows that could not be parsed, as dead letters of `node`.
    pub malformed: Vec<DeadLetter>,
    node: Arc<str>,
    origin: Arc<Origin>,
    bytes: usize,
    /// Reused per row.
    doc: Vec<u8>,
    /// Every column is text: a row cannot fail once its UTF-8 is checked.
    all_text: bool,
}

impl RowBatcher {
    /// Every column a string, as written. Batches and dead letters come
    /// from `origin`; dead letters name `node` (`sources.NAME`).
    pub fn new(format: Format, columns: Vec<String>, node: &str, origin: &Arc<Origin>) -> Self {
        let types = vec![ColumnType::String; columns.len()];
        Self::build(format, columns, types, false, node, origin)
    }

    /// Columns of fixed types (every batch has this schema).
    pub fn typed(format: Format, columns: Vec<(String, ColumnType)>, node: &str, origin: &Arc<Origin>) -> Self {
        let (names, types) = columns.into_iter().unzip();
        Self::build(format, names, types, true, node, origin)
    }

    /// A row the source could not turn into a record: to the DLQ as read
    /// (or its first bytes, for a row too large to keep).
    pub fn unparsed(&mut self, meta: RecordMeta, raw: &[u8], code: &str, message: impl Into<String>) {
        self.malformed.push(DeadLetter::unparsed(&self.node, &self.origin, meta, raw.to_vec(), code, message));
    }

    /// A row that does not parse (code `malformed`).
    fn bad_row(&mut self, meta: RecordMeta, raw: &[u8], message: impl Into<String>) {
        self.unparsed(meta, raw, "malformed", message);
    }

    fn build(
        format: Format,
        columns: Vec<String>,
        types: Vec<ColumnType>,
        typed: bool,
        node: &str,
        origin: &Arc<Origin>,
    ) -> Self {
        let builders = types.iter().map(|t| Builder::new(*t)).collect();
        let all_text = types.iter().all(|t| *t == ColumnType::String);
        Self {
            all_text,
            format,
            columns,
            types,
            typed,
            builders,
            json: JsonRecords::with_capacity(0, 0),
            meta: Vec::new(),
            malformed: Vec::new(),
            node: node.into(),
            origin: origin.clone(),
            bytes: 0,
            doc: Vec::with_capacity(256),
        }
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

    /// The Arrow schema of this batcher's batches.
    pub fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> =
            self.columns.iter().zip(&self.types).map(|(c, t)| Field::new(c, t.arrow(), true)).collect();
        Arc::new(Schema::new(fields))
    }

    /// Add one CSV record (already split; `raw` is its text, for the DLQ,
    /// and holds every field's bytes). Empty fields are missing values.
    pub fn push_csv<'a>(
        &mut self,
        meta: RecordMeta,
        fields: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
        raw: &[u8],
    ) {
        if fields.len() != self.columns.len() {
            let message = format!("expected {} CSV fields, found {}", self.columns.len(), fields.len());
            self.bad_row(meta, raw, message);
            return;
        }
        // The fields are `raw` split at (and unquoted around) ASCII bytes,
        // so `raw` being UTF-8 makes every field UTF-8: one check per row.
        if std::str::from_utf8(raw).is_err() {
            self.bad_row(meta, raw, "the row is not valid UTF-8");
            return;
        }
        if self.all_text && self.format == Format::Arrow {
            // Nothing left to fail: straight into the builders (the hot loop
            // of an untyped CSV source).
            for (b, field) in self.builders.iter_mut().zip(fields) {
                let Builder::Str(b) = b else { unreachable!("all_text") };
                if field.trim_ascii().is_empty() {
                    b.append_null();
                } else {
                    b.append_value(field);
                }
            }
            self.bytes += raw.len();
            self.meta.push(meta);
            return;
        }
        // One pass and one allocation per row: collecting a `Result<Vec<_>>`
        // loses the size hint and regrows the vector several times per row.
        let mut cells = Vec::with_capacity(self.columns.len());
        let mut bad = None;
        for ((field, column), ty) in fields.zip(&self.columns).zip(&self.types) {
            let Ok(text) = std::str::from_utf8(field) else {
                bad = Some("the row is not valid UTF-8".to_string());
                break;
            };
            match typing::parse_in(column, *ty, text) {
                Ok(cell) => cells.push(cell),
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(message) = bad {
            drop(cells);
            self.bad_row(meta, raw, message);
            return;
        }
        self.bytes += raw.len();
        self.push_cells(meta, &cells);
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
                    self.push_csv(RecordMeta::line(seq), rec.iter(), &raw);
                }
                Err(e) => self.bad_row(RecordMeta::line(seq), &[], e.to_string()),
            }
            seq += 1;
        }
    }

    /// Add one NDJSON line. JSON output keeps the document as it is. Arrow
    /// output of an untyped batcher gets a column per key seen so far (as
    /// text); a typed batcher reads each key of its columns with the column's
    /// type, and a key it does not have makes the line malformed (never a
    /// silently dropped value).
    pub fn push_json(&mut self, meta: RecordMeta, line: &[u8]) {
        if self.format == Format::Json {
            match crate::convert::check_json(line) {
                Ok(()) if line.trim_ascii_start().starts_with(b"{") => {
                    self.bytes += line.len();
                    self.json.push(line.trim_ascii());
                    self.meta.push(meta);
                }
                Ok(()) => self.bad_row(meta, line, "the line is JSON but not an object"),
                Err(NotJson::Utf8(_)) => self.bad_row(meta, line, "the line is not valid UTF-8"),
                Err(NotJson::Syntax(e)) => self.bad_row(meta, line, format!("invalid JSON: {e}")),
            }
            return;
        }
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(line) {
            Ok(o) => o,
            Err(e) => {
                self.bad_row(meta, line, format!("invalid JSON object: {e}"));
                return;
            }
        };
        for k in obj.keys() {
            if !self.columns.iter().any(|c| c == k) {
                if self.typed {
                    let message = format!(
                        "key {k:?} is not among the columns inferred from the first lines; declare it in `columns`"
                    );
                    self.bad_row(meta, line, message);
                    return;
                }
                // A new column: back-fill nulls for the rows before it.
                let mut b = Builder::new(ColumnType::String);
                (0..self.meta.len()).for_each(|_| b.append(Cell::Missing));
                self.columns.push(k.clone());
                self.types.push(ColumnType::String);
                self.builders.push(b);
            }
        }
        let texts: Vec<Option<String>> = self
            .columns
            .iter()
            .map(|c| match obj.get(c) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => Some(v.to_string()),
            })
            .collect();
        let cells: Result<Vec<Cell>, _> = texts
            .iter()
            .zip(&self.columns)
            .zip(&self.types)
            .map(|((t, c), ty)| t.as_deref().map_or(Ok(Cell::Missing), |t| typing::parse_in(c, *ty, t)))
            .collect();
        match cells {
            Ok(cells) => {
                self.bytes += line.len();
                self.push_cells(meta, &cells);
            }
            Err(e) => self.bad_row(meta, line, e.to_string()),
        }
    }

    fn push_cells(&mut self, meta: RecordMeta, cells: &[Cell<'_>]) {
        match self.format {
            Format::Arrow => {
                for (b, c) in self.builders.iter_mut().zip(cells) {
                    b.append(*c);
                }
            }
            Format::Json => {
                let doc = &mut self.doc;
                doc.clear();
                doc.push(b'{');
                let mut first = true;
                for (c, v) in self.columns.iter().zip(cells) {
                    if matches!(v, Cell::Missing) {
                        continue;
                    }
                    if !first {
                        doc.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut *doc, c).expect("vec write");
                    doc.push(b':');
                    typing::write_json(*v, doc);
                }
                doc.push(b'}');
                self.json.push(doc);
            }
        }
        self.meta.push(meta);
    }

    /// Take the rows gathered so far as a batch (None when there are none)
    /// and the dead letters of the malformed rows.
    pub fn take(&mut self) -> (Option<Batch>, Vec<DeadLetter>) {
        let malformed = std::mem::take(&mut self.malformed);
        self.bytes = 0;
        if self.meta.is_empty() {
            return (None, malformed);
        }
        let meta = std::mem::take(&mut self.meta);
        let data = match self.format {
            Format::Json => {
                BatchData::Json(std::mem::replace(&mut self.json, JsonRecords::with_capacity(meta.len(), 0)))
            }
            Format::Arrow => {
                let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
                BatchData::Arrow(
                    RecordBatch::try_new(self.schema(), arrays).expect("one builder per column, equal lengths"),
                )
            }
        };
        (Some(Batch { origin: self.origin.clone(), meta, data }), malformed)
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
