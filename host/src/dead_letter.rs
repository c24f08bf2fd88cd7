//! A record that will not be processed, as the pipeline carries it to the
//! dead-letter queue: which node gave up on it, why, where it came from, and
//! its bytes as they arrived (invariant 5). Sources and stages build these;
//! only the DLQ sink (`sink::dlq`) decides how they are written, so the DLQ
//! can change destination without touching the nodes that reject records.

use std::sync::Arc;

use crate::batch::{Batch, BatchData, Origin, RecordMeta, Rejection};

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The node that rejected the record (`stages.validate`, `sinks.lake`, ...).
    pub node: Arc<str>,
    pub code: String,
    pub message: String,
    pub origin: Arc<Origin>,
    pub meta: RecordMeta,
    /// The record as it arrived: a JSON document, an Arrow row rendered as
    /// one, or the raw bytes a source could not parse (maybe only a prefix).
    pub record: Vec<u8>,
}

impl DeadLetter {
    /// Dead letters for `rejections` of `batch`, rejected by `node`: each
    /// with its record's provenance and bytes. `batch` must be the records
    /// as they arrived at the node, not the host's conversion of them.
    pub fn all(node: &str, batch: &Batch, rejections: impl IntoIterator<Item = Rejection>) -> Vec<Self> {
        let node: Arc<str> = node.into();
        let rejections: Vec<Rejection> = rejections.into_iter().collect();
        let records = records_bytes(batch, rejections.iter().map(|r| r.index));
        rejections
            .into_iter()
            .zip(records)
            .map(|(r, record)| Self {
                node: node.clone(),
                record,
                meta: batch.meta[r.index].clone(),
                origin: batch.origin.clone(),
                code: r.code,
                message: r.message,
            })
            .collect()
    }

    /// A record a source could not turn into a batch record (malformed,
    /// too large, a corrupt aggregate, a note about a partition).
    pub fn unparsed(
        node: &str,
        origin: &Arc<Origin>,
        meta: RecordMeta,
        raw: Vec<u8>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            node: node.into(),
            code: code.into(),
            message: message.into(),
            origin: origin.clone(),
            meta,
            record: raw,
        }
    }
}

/// Records `rows` of `batch` as bytes: the JSON document itself, or an
/// Arrow row rendered as one. Arrow rows are rendered together: a JSON
/// writer per row cost several µs per rejected record.
pub fn records_bytes(batch: &Batch, rows: impl ExactSizeIterator<Item = usize>) -> Vec<Vec<u8>> {
    match &batch.data {
        BatchData::Json(j) => rows.map(|i| j.get(i).to_vec()).collect(),
        BatchData::Arrow(rb) => crate::convert::rows_json(rb, &rows.collect::<Vec<_>>()),
    }
}
