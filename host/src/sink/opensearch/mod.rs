//! OpenSearch sink (`type = "opensearch"`): documents indexed with the bulk
//! API of the `opensearch` crate.
//!
//! Exactly-once in effect without a transaction: every document has a
//! deterministic `_id` (`ids`), so a record replayed after a crash
//! overwrites itself. A batch is split into bulk requests of
//! `bulk_max_records` / `bulk_max_bytes`, and its write completes only when
//! every item is acknowledged or refused (`bulk`): the records of a batch
//! are searchable after the index's refresh (the shipped templates' 250 ms;
//! OpenSearch's default 1 s) whatever the checkpoint interval. Nothing is
//! held back for a fuller bulk: latency is the round trip plus the refresh,
//! never a linger of ours.
//!
//! Writes are detached (`Sink::write_detached`): the bodies are built on the
//! node's thread, the requests are sent by a future that owns a clone of
//! the client, so the node builds the next batch's bodies while this one's
//! requests are in flight and the cluster never idles between batches. One
//! semaphore of `concurrency` permits, shared by every batch, bounds the
//! bulk requests in flight (a request keeps its permit through its
//! retries), so the configured bound holds however many batches overlap.
//! The node drains every detached write before `prepare`, so a checkpoint
//! never covers an unacknowledged record; `prepare` itself, `commit` and
//! `recover` have nothing to do.
//!
//! Modules: `config` (keys, checks), `client` (transport, auth, TLS, probe),
//! `bulk` (requests, per-item results, retries), `ids`, `index` (index name
//! patterns), `template` (the index template put at start).

pub mod bulk;
pub mod client;
pub mod config;
pub mod ids;
pub mod index;
pub mod template;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::info;

use self::bulk::Chunk;
use self::client::Client;
use self::config::OpenSearchSinkSpec;
use self::index::IndexPattern;
use super::{Detached, Sink, SinkError, Written};
use crate::batch::{Batch, BatchData, Format, Rejection};
use crate::retry::RetryPolicy;

pub struct OpenSearchSink {
    name: String,
    spec: OpenSearchSinkSpec,
    index: IndexPattern,
    /// Built in `recover` (SigV4 credentials load asynchronously).
    client: Option<Client>,
    policy: RetryPolicy,
    /// Bulk requests in flight, across every batch being written.
    slots: Arc<Semaphore>,
    /// Documents acknowledged (detached writes add to it).
    indexed: Arc<AtomicU64>,
    /// A write failed: the run stops; no later call may pretend otherwise.
    broken: Arc<Mutex<Option<String>>>,
}

pub fn build(name: &str, spec: &OpenSearchSinkSpec) -> Result<OpenSearchSink, SinkError> {
    spec.check_keyed()
        .map_err(|(_, message)| SinkError::Config {
            sink: name.into(),
            message,
        })?;
    Ok(OpenSearchSink {
        name: name.into(),
        index: IndexPattern::parse(&spec.index).expect("checked"),
        policy: RetryPolicy::forever(std::time::Duration::from_millis(100), spec.max_backoff.0),
        slots: Arc::new(Semaphore::new(spec.concurrency.max(1))),
        spec: spec.clone(),
        client: None,
        indexed: Arc::default(),
        broken: Arc::default(),
    })
}

impl OpenSearchSink {
    fn err(&self, message: String) -> SinkError {
        err(&self.name, message)
    }

    fn broken(&self) -> Option<String> {
        self.broken.lock().expect("not poisoned").clone()
    }

    /// `batch`'s bulk requests, built now, and the future that sends them.
    fn start(&mut self, batch: &Batch) -> Detached {
        if let Some(b) = self.broken() {
            let e = self.err(format!(
                "an earlier write failed ({b}); the run must restart from the last checkpoint"
            ));
            return Box::pin(std::future::ready(Err(e)));
        }
        let Some(client) = self.client.clone() else {
            let e = self.err("write before recover (a bug in the runtime)".into());
            return Box::pin(std::future::ready(Err(e)));
        };
        let (chunks, mut refused) = self.chunks(batch);
        let sent: usize = chunks.iter().map(Chunk::len).sum();
        let (policy, slots) = (self.policy, self.slots.clone());
        let (name, indexed, broken) =
            (self.name.clone(), self.indexed.clone(), self.broken.clone());
        Box::pin(async move {
            // Every request of the batch queues for a permit at once (the
            // semaphore is fair), ahead of the next batch's.
            let requests = chunks.into_iter().map(|c| {
                let (client, slots) = (&client, &slots);
                async move {
                    let _permit = slots.acquire().await.expect("never closed");
                    bulk::send(client, c, &policy).await
                }
            });
            match futures::future::try_join_all(requests).await {
                Ok(r) => {
                    let server_refused: usize = r.iter().map(Vec::len).sum();
                    refused.extend(r.into_iter().flatten());
                    refused.sort_by_key(|r| r.index);
                    let accepted = sent - server_refused;
                    indexed.fetch_add(accepted as u64, Relaxed);
                    Ok(Written { accepted, refused })
                }
                Err(m) => {
                    *broken.lock().expect("not poisoned") = Some(m.clone());
                    Err(err(&name, m))
                }
            }
        })
    }

    /// The bulk requests for `batch`, and the records refused before sending
    /// (no index or id could be derived from them).
    fn chunks(&self, batch: &Batch) -> (Vec<Chunk>, Vec<Rejection>) {
        let BatchData::Json(docs) = &batch.data else {
            unreachable!("the node converts batches to the format the sink takes (json)")
        };
        let parse = self.index.is_dynamic() || self.spec.id_field.is_some();
        let provenance = match self.spec.id_field {
            None => ids::provenance_ids(batch),
            Some(_) => Vec::new(),
        };
        let (max_records, max_bytes) = (
            balanced(
                docs.len(),
                self.spec.bulk_max_records,
                self.spec.concurrency,
            ),
            self.spec.bulk_max_bytes.0 as usize,
        );
        let mut chunks = vec![Chunk::default()];
        let mut refused = Vec::new();
        for i in 0..docs.len() {
            let raw = docs.get(i);
            let parsed: Option<Value> = match parse {
                true => match serde_json::from_slice(raw) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        refused.push(Rejection::new(
                            i,
                            "malformed",
                            format!("not a JSON document: {e}"),
                        ));
                        continue;
                    }
                },
                false => None,
            };
            let index = match self.index.resolve(parsed.as_ref()) {
                Ok(x) => x,
                Err(m) => {
                    refused.push(Rejection::new(i, "index_unresolved", m));
                    continue;
                }
            };
            let id = match (&self.spec.id_field, parsed.as_ref()) {
                (Some(f), Some(doc)) => match ids::field_id(doc, f) {
                    Ok(id) => id,
                    Err(m) => {
                        refused.push(Rejection::new(i, "id_unresolved", m));
                        continue;
                    }
                },
                _ => provenance[i].clone(),
            };
            // A bulk body is one document per line: a pretty-printed record
            // is re-serialized on one line.
            let one_line;
            let doc = if memchr::memchr(b'\n', raw).is_some() {
                one_line = match &parsed {
                    Some(v) => serde_json::to_vec(v),
                    None => {
                        serde_json::from_slice::<Value>(raw).and_then(|v| serde_json::to_vec(&v))
                    }
                };
                match &one_line {
                    Ok(b) => b.as_slice(),
                    Err(e) => {
                        refused.push(Rejection::new(
                            i,
                            "malformed",
                            format!("not a JSON document: {e}"),
                        ));
                        continue;
                    }
                }
            } else {
                raw
            };
            let last = chunks.last_mut().expect("one chunk at least");
            if last.len() >= max_records
                || (last.len() > 0 && last.body.len() + doc.len() > max_bytes)
            {
                chunks.push(Chunk::default());
            }
            chunks
                .last_mut()
                .expect("just pushed")
                .push(i, &index, &id, doc);
        }
        chunks.retain(|c| c.len() > 0);
        (chunks, refused)
    }
}

fn err(sink: &str, message: String) -> SinkError {
    SinkError::Io {
        sink: sink.into(),
        message,
        retryable: false,
    }
}

/// Records per bulk request for a batch of `n`: the batch split into equal
/// requests of at most `max` (2048 with `max` 1000: 3 × 683, not 1000 +
/// 1000 and then 48 alone), and into `concurrency` of them at least, so a
/// batch that arrives alone uses every slot (1000 with 2 in flight: 2 ×
/// 500). Not more: every request costs the cluster a translog fsync, and
/// the slots stay busy anyway while batches overlap.
fn balanced(n: usize, max: usize, concurrency: usize) -> usize {
    let requests = n.div_ceil(max.max(1)).max(concurrency.max(1));
    n.div_ceil(requests).clamp(1, max.max(1))
}

#[async_trait]
impl Sink for OpenSearchSink {
    fn takes(&self) -> Format {
        Format::Json
    }

    async fn write(&mut self, batch: &Batch) -> Result<Written, SinkError> {
        self.start(batch).await
    }

    fn write_detached(&mut self, batch: &Batch) -> Option<Detached> {
        Some(self.start(batch))
    }

    async fn prepare(&mut self, _epoch: u64) -> Result<Value, SinkError> {
        if let Some(b) = self.broken() {
            return Err(self.err(format!("an earlier write failed ({b})")));
        }
        // The node drained every write before this call (each completes
        // only when all its items are acknowledged): nothing is pending.
        // The token is informational.
        Ok(serde_json::json!({ "indexed": self.indexed.load(Relaxed) }))
    }

    async fn commit(&mut self, _token: &Value) -> Result<(), SinkError> {
        Ok(())
    }

    /// Nothing to complete or discard (see the module docs); connects, and
    /// puts the index template, so a bad endpoint or credentials stop the
    /// run before any record is read.
    async fn recover(&mut self, _token: Option<&Value>) -> Result<(), SinkError> {
        let config = |message| SinkError::Config {
            sink: self.name.clone(),
            message,
        };
        let client = Client::new(&self.spec).await.map_err(config)?;
        client.probe().await.map_err(config)?;
        if let Some(path) = &self.spec.template {
            let name = self
                .spec
                .template_name
                .clone()
                .unwrap_or_else(|| self.name.to_lowercase());
            let body = template::load(path, &name).map_err(config)?;
            template::put(&client, &name, &body).await.map_err(config)?;
            info!(template = %name, endpoint = %client.endpoints(), "index template in place");
        }
        self.client = Some(client);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_are_split_into_equal_requests_one_per_slot_at_least() {
        use super::balanced;
        assert_eq!(balanced(2048, 1000, 2), 683);
        assert_eq!(balanced(4096, 1000, 2), 820);
        assert_eq!(balanced(1000, 1000, 2), 500);
        assert_eq!(balanced(10, 1000, 2), 5);
        assert_eq!(balanced(1, 1000, 4), 1);
        assert_eq!(balanced(5000, 1000, 1), 1000);
        assert_eq!(balanced(0, 1000, 2), 1);
    }
}
