//! PutRecords: batches within the API limits, and retries of only the
//! entries a partially failed call rejected.

use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use aws_smithy_types::Blob;

use crate::retry::RetryPolicy;
use crate::source::kinesis::client::{classify, ErrorKind, StreamId};
use crate::source::kinesis::kpl::MAX_RECORD_BYTES;

/// PutRecords limits: entries per call and bytes per call (data + keys).
pub const MAX_ENTRIES: usize = 500;
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;

/// One Kinesis record to put: a user record, or a KPL aggregate of several.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub data: Vec<u8>,
    /// The user records inside an aggregate (empty for a plain record, which is `data`).
    pub packed: Vec<Vec<u8>>,
}

impl Entry {
    pub fn size(&self) -> usize {
        self.data.len() + self.key.len()
    }
    /// User records it carries.
    pub fn count(&self) -> usize {
        self.packed.len().max(1)
    }
    /// The user records, for the failure file.
    pub fn user_records(&self) -> Vec<&[u8]> {
        if self.packed.is_empty() {
            vec![&self.data]
        } else {
            self.packed.iter().map(Vec::as_slice).collect()
        }
    }
}

/// Fills PutRecords calls.
#[derive(Debug, Default)]
pub struct Batcher {
    entries: Vec<Entry>,
    bytes: usize,
    max_entries: usize,
}

impl Batcher {
    pub fn new(max_entries: usize) -> Self {
        Self { entries: Vec::new(), bytes: 0, max_entries: max_entries.clamp(1, MAX_ENTRIES) }
    }
    /// Adds an entry; returns a full batch when this entry would not fit.
    pub fn push(&mut self, e: Entry) -> Option<Vec<Entry>> {
        let full = !self.entries.is_empty() && (self.entries.len() >= self.max_entries || self.bytes + e.size() > MAX_CALL_BYTES);
        let out = if full { self.take() } else { None };
        self.bytes += e.size();
        self.entries.push(e);
        if self.entries.len() >= self.max_entries {
            return out.or_else(|| self.take());
        }
        out
    }
    pub fn take(&mut self) -> Option<Vec<Entry>> {
        self.bytes = 0;
        (!self.entries.is_empty()).then(|| std::mem::take(&mut self.entries))
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What became of one batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// User records accepted.
    pub sent: u64,
    /// User records sent again after a failure.
    pub retried: u64,
    pub failed: Vec<Entry>,
    pub last_error: Option<String>,
    pub calls: u64,
    /// Kinesis records accepted (aggregates count once).
    pub records: u64,
}

/// Puts `entries`, retrying the rejected ones (throttled, internal failure)
/// and whole-call failures with `policy`; what is still failing at the end is
/// returned in `failed`.
pub async fn put(client: &Client, stream: &StreamId, entries: Vec<Entry>, policy: &RetryPolicy) -> Outcome {
    let mut out = Outcome::default();
    let (mut pending, too_big): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| e.size() <= MAX_RECORD_BYTES);
    if !too_big.is_empty() {
        out.last_error = Some(format!("{} records exceed the 1 MiB Kinesis record limit", too_big.len()));
        out.failed.extend(too_big);
    }
    let mut backoff = policy.start();
    while !pending.is_empty() {
        let request: Vec<PutRecordsRequestEntry> = pending
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(e.data.clone()))
                    .partition_key(&e.key)
                    .build()
                    .expect("data and key are set")
            })
            .collect();
        out.calls += 1;
        let resp = client
            .put_records()
            .set_stream_name(stream.name_owned())
            .set_stream_arn(stream.arn_owned())
            .set_records(Some(request))
            .send()
            .await;
        match resp {
            Ok(r) => {
                let mut rejected = Vec::new();
                for (entry, result) in pending.into_iter().zip(r.records().iter().map(Some).chain(std::iter::repeat(None))) {
                    match result.and_then(|x| x.error_code()) {
                        None if result.is_some() => {
                            out.sent += entry.count() as u64;
                            out.records += 1;
                        }
                        code => {
                            let msg = result.and_then(|x| x.error_message()).unwrap_or("no result for this entry");
                            out.last_error = Some(format!("{}: {msg}", code.unwrap_or("Missing")));
                            rejected.push(entry);
                        }
                    }
                }
                pending = rejected;
            }
            Err(e) => {
                let err = classify(&e);
                out.last_error = Some(err.message.clone());
                if matches!(err.kind, ErrorKind::Fatal | ErrorKind::NotFound | ErrorKind::Unsupported | ErrorKind::InvalidArgument) {
                    out.failed.append(&mut pending);
                    break;
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        match backoff.next_delay() {
            Some(d) => {
                out.retried += pending.iter().map(|e| e.count() as u64).sum::<u64>();
                tracing::debug!(entries = pending.len(), delay_ms = d.as_millis() as u64, error = ?out.last_error, "retrying rejected PutRecords entries");
                tokio::time::sleep(d).await;
            }
            None => {
                out.failed.append(&mut pending);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> Entry {
        Entry { key: "k".into(), data: vec![b'x'; bytes], packed: vec![] }
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let mut b = Batcher::new(500);
        let mut batches = Vec::new();
        for _ in 0..1200 {
            batches.extend(b.push(entry(10)));
        }
        batches.extend(b.take());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![500, 500, 200]);

        let mut b = Batcher::new(500);
        let mut batches = Vec::new();
        for _ in 0..12 {
            batches.extend(b.push(entry(1 << 20)));
        }
        batches.extend(b.take());
        for batch in &batches {
            assert!(batch.iter().map(Entry::size).sum::<usize>() <= MAX_CALL_BYTES);
        }
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 12);
        assert_eq!(batches[0].len(), 4); // 4 x (1 MiB + 1) fit in 5 MiB, 5 do not
    }
}
