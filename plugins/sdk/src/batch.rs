//! Reading JSON batches and building JSON output.
//!
//! A JSON batch is one buffer with n + 1 offsets: record i is
//! `data[offsets[i] .. offsets[i + 1]]`. Output records carry the index of the
//! input record they came from (`origin`), which is how the host keeps source
//! positions — and so exactly-once ids — through filters and explodes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Batch, Format, Rejection, Transformed};

impl Batch {
    /// A JSON batch from one document per record.
    pub fn from_json_docs<'a>(docs: impl IntoIterator<Item = &'a [u8]>) -> Batch {
        let mut data = Vec::new();
        let mut offsets = vec![0u32];
        for d in docs {
            data.extend_from_slice(d);
            offsets.push(data.len() as u32);
        }
        Batch { format: Format::Json, data, offsets }
    }

    /// Number of records of a JSON batch (Arrow batches: decode to know).
    pub fn json_len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The records of a JSON batch as `(index, bytes)`; `Err` for an Arrow batch.
    pub fn json_records(&self) -> Result<JsonRecords<'_>, String> {
        if self.format != Format::Json {
            return Err("expected a JSON batch, got an Arrow batch".to_owned());
        }
        Ok(JsonRecords { data: &self.data, offsets: &self.offsets, next: 0 })
    }

    /// The records deserialised as `T`: `(index, Ok(value))`, or `(index, Err(message))`
    /// for a record that does not parse (reject it with code `malformed`).
    pub fn parse_records<T: DeserializeOwned>(
        &self,
    ) -> Result<impl Iterator<Item = (u32, Result<T, String>)> + '_, String> {
        Ok(self.json_records()?.map(|(i, doc)| (i, serde_json::from_slice(doc).map_err(|e| e.to_string()))))
    }
}

/// Iterator over the records of a JSON batch: `(input index, document bytes)`.
/// Offsets outside the buffer yield an empty document (which does not parse)
/// rather than trap.
pub struct JsonRecords<'a> {
    data: &'a [u8],
    offsets: &'a [u32],
    next: usize,
}

impl<'a> Iterator for JsonRecords<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.next;
        if i + 1 >= self.offsets.len() {
            return None;
        }
        self.next += 1;
        let (s, e) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        Some((i as u32, self.data.get(s..e).unwrap_or_default()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.offsets.len().saturating_sub(1 + self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for JsonRecords<'_> {}

impl Rejection {
    pub fn new(index: u32, code: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection { index, code: code.into(), message: message.into() }
    }
}

impl Transformed {
    /// An output batch with its origins and rejections, as returned from `process`.
    pub fn new(output: Batch, origin: Vec<u32>, rejected: Vec<Rejection>) -> Self {
        Transformed { output, origin, rejected }
    }
}

/// Builds the JSON output of a `process` call: records with their origin,
/// and rejections.
#[derive(Debug, Default)]
pub struct JsonOutput {
    data: Vec<u8>,
    offsets: Vec<u32>,
    origin: Vec<u32>,
    rejected: Vec<Rejection>,
}

impl JsonOutput {
    pub fn new() -> Self {
        Self::with_capacity(0, 0)
    }

    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(records + 1);
        offsets.push(0);
        Self { data: Vec::with_capacity(bytes), offsets, origin: Vec::with_capacity(records), rejected: Vec::new() }
    }

    /// Sized for an output about as large as `input`.
    pub fn for_input(input: &Batch) -> Self {
        Self::with_capacity(input.json_len(), input.data.len())
    }

    /// Appends a document as is (it must be one JSON value).
    pub fn push_raw(&mut self, origin: u32, doc: &[u8]) {
        self.data.extend_from_slice(doc);
        self.offsets.push(self.data.len() as u32);
        self.origin.push(origin);
    }

    /// Appends `value` serialised as JSON.
    pub fn push<T: Serialize + ?Sized>(&mut self, origin: u32, value: &T) -> Result<(), String> {
        let start = self.data.len();
        if let Err(e) = serde_json::to_writer(&mut self.data, value) {
            self.data.truncate(start);
            return Err(format!("cannot serialise output record from input {origin}: {e}"));
        }
        self.offsets.push(self.data.len() as u32);
        self.origin.push(origin);
        Ok(())
    }

    /// Refuses input record `index`; it lands in the dead-letter queue with `code` and `message`.
    pub fn reject(&mut self, index: u32, code: impl Into<String>, message: impl Into<String>) {
        self.rejected.push(Rejection::new(index, code, message));
    }

    pub fn len(&self) -> usize {
        self.origin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origin.is_empty()
    }

    pub fn finish(self) -> Transformed {
        Transformed {
            output: Batch { format: Format::Json, data: self.data, offsets: self.offsets },
            origin: self.origin,
            rejected: self.rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_output() {
        let input = Batch::from_json_docs([&b"{\"a\":1}"[..], b"bad", b"{\"a\":3}"]);
        let mut out = JsonOutput::for_input(&input);
        for (i, v) in input.parse_records::<serde_json::Value>().unwrap() {
            match v {
                Ok(v) => out.push(i, &v).unwrap(),
                Err(e) => out.reject(i, "malformed", e),
            }
        }
        let t = out.finish();
        assert_eq!(t.origin, vec![0, 2]);
        assert_eq!(t.rejected.len(), 1);
        assert_eq!(t.rejected[0].index, 1);
        let docs: Vec<_> = t.output.json_records().unwrap().map(|(_, d)| d.to_vec()).collect();
        assert_eq!(docs, vec![b"{\"a\":1}".to_vec(), b"{\"a\":3}".to_vec()]);
    }

    #[test]
    fn bad_offsets_do_not_panic() {
        let b = Batch { format: Format::Json, data: b"{}".to_vec(), offsets: vec![0, 2, 99] };
        let recs: Vec<_> = b.json_records().unwrap().collect();
        assert_eq!(recs, vec![(0, &b"{}"[..]), (1, &b""[..])]);
    }
}
