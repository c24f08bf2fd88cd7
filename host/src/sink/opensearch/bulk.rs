//! Bulk requests and their per-item results.
//!
//! A bulk answer is judged item by item (a partial failure must never pass
//! for success, nor fail the whole request): an acknowledged item is done;
//! a 429 or 5xx item is sent again alone (with the other such items of its
//! request) after a backoff; any other item error (mapping, parse) is a
//! refusal with OpenSearch's reason, for the DLQ. A request with no answer,
//! or answered 429/5xx as a whole, is the cluster being unavailable: it is
//! retried with a capped backoff until the cluster is back — the pipeline
//! stalls, backpressure reaches the source, and it catches up by itself.
//! Only a 4xx of the whole request (credentials revoked, body too large) is
//! an error that stops the run.

use std::ops::Range;

use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use super::client::{Client, RequestError};
use crate::batch::Rejection;
use crate::retry::RetryPolicy;

/// Documents of one bulk request: `body[items[k].bytes]` is the action line
/// and source of the record at batch index `items[k].index`.
#[derive(Debug, Default)]
pub struct Chunk {
    pub body: Vec<u8>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub index: usize,
    pub bytes: Range<usize>,
}

impl Chunk {
    /// Appends `{"index":{"_index":…,"_id":…}}\n{doc}\n`.
    pub fn push(&mut self, batch_index: usize, index: &str, id: &str, doc: &[u8]) {
        let start = self.body.len();
        self.body.extend_from_slice(b"{\"index\":{\"_index\":");
        serde_json::to_writer(&mut self.body, index).expect("a string serializes");
        self.body.extend_from_slice(b",\"_id\":");
        serde_json::to_writer(&mut self.body, id).expect("a string serializes");
        self.body.extend_from_slice(b"}}\n");
        self.body.extend_from_slice(doc);
        self.body.push(b'\n');
        self.items.push(Item {
            index: batch_index,
            bytes: start..self.body.len(),
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    fn subset(&self, items: &[Item]) -> Chunk {
        subset(&self.body, items)
    }
}

/// A chunk of only `items` of `body` (those to retry).
fn subset(body: &[u8], items: &[Item]) -> Chunk {
    let mut out = Chunk::default();
    for it in items {
        let start = out.body.len();
        out.body.extend_from_slice(&body[it.bytes.clone()]);
        out.items.push(Item {
            index: it.index,
            bytes: start..out.body.len(),
        });
    }
    out
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<ItemResponse>,
}

#[derive(Deserialize)]
struct ItemResponse {
    index: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// What one answer says about each item of a request.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub acknowledged: usize,
    /// Positions (in the request) to send again.
    pub retry: Vec<usize>,
    /// Positions refused for good, with OpenSearch's reason.
    pub refused: Vec<(usize, String)>,
}

/// Judges a bulk answer for a request of `sent` items.
pub fn judge(body: &[u8], sent: usize) -> Result<Outcome, String> {
    let r: BulkResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable bulk answer ({e})"))?;
    if r.items.len() != sent {
        return Err(format!(
            "the bulk answer lists {} items for {sent} sent",
            r.items.len()
        ));
    }
    let mut o = Outcome::default();
    for (k, it) in r.items.into_iter().enumerate() {
        let s = it.index.status;
        if (200..300).contains(&s) {
            o.acknowledged += 1;
        } else if s == 429 || s >= 500 {
            o.retry.push(k);
        } else {
            let reason = it
                .index
                .error
                .as_ref()
                .map(reason_of)
                .unwrap_or_else(|| format!("HTTP {s}"));
            o.refused.push((k, reason));
        }
    }
    Ok(o)
}

/// `type: reason (caused by: type: reason)` of an OpenSearch error object.
pub fn reason_of(e: &Value) -> String {
    let one = |e: &Value| match (
        e.get("type").and_then(Value::as_str),
        e.get("reason").and_then(Value::as_str),
    ) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (Some(t), None) => t.to_string(),
        (None, Some(r)) => r.to_string(),
        (None, None) => e.to_string(),
    };
    let mut s = one(e);
    if let Some(c) = e.get("caused_by") {
        s.push_str(&format!(" (caused by {})", one(c)));
    }
    s
}

/// The reason in an error answer's body, else the body itself (shortened).
pub fn reason_of_body(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("error").is_some_and(Value::is_object) => reason_of(&v["error"]),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

/// Sends `chunk` until every item is acknowledged or refused; returns the
/// refusals (batch indexes). `Err` only for errors that waiting cannot fix.
pub async fn send(
    client: &Client,
    chunk: Chunk,
    policy: &RetryPolicy,
) -> Result<Vec<Rejection>, String> {
    // `Bytes`: a retry of the whole request re-sends without copying.
    let mut body = bytes::Bytes::from(chunk.body);
    let mut items = chunk.items;
    let mut refused = Vec::new();
    let mut backoff = policy.start();
    loop {
        let n = items.len();
        let why = match client.send(opensearch::http::Method::Post, "/_bulk", Some(body.clone()), true).await {
            Err(RequestError(m)) => m,
            Ok((s, answer)) if s.is_success() => {
                let o = judge(&answer, n).map_err(|m| format!("OpenSearch at {}: {m}", client.endpoints()))?;
                for (k, reason) in o.refused {
                    refused.push(Rejection::new(items[k].index, "opensearch_rejected", reason));
                }
                if o.retry.is_empty() {
                    return Ok(refused);
                }
                let again: Vec<Item> = o.retry.iter().map(|&k| items[k].clone()).collect();
                if o.acknowledged > 0 {
                    // Progress: the cluster is working, only busy.
                    backoff.reset();
                }
                let why = format!("{} of {n} bulk items throttled or failed on the server (429/5xx)", again.len());
                let next = subset(&body, &again);
                (body, items) = (bytes::Bytes::from(next.body), next.items);
                why
            }
            Ok((s, answer)) if s.as_u16() == 429 || s.is_server_error() => format!("OpenSearch at {} answered HTTP {s}: {}", client.endpoints(), reason_of_body(&answer)),
            Ok((s, _)) if s.as_u16() == 401 || s.as_u16() == 403 => {
                return Err(format!("OpenSearch at {} refused the credentials (HTTP {s}); check username/password or the AWS identity", client.endpoints()))
            }
            Ok((s, answer)) if s.as_u16() == 413 => {
                return Err(format!("OpenSearch at {} refused a bulk request of {} bytes as too large (HTTP {s}: {}); lower bulk_max_bytes", client.endpoints(), body.len(), reason_of_body(&answer)))
            }
            Ok((s, answer)) => return Err(format!("OpenSearch at {} refused a bulk request (HTTP {s}): {}", client.endpoints(), reason_of_body(&answer))),
        };
        let delay = backoff.next_delay().unwrap_or(policy.max_delay);
        warn!(
            retry_in_ms = delay.as_millis() as u64,
            attempt = backoff.failures(),
            items = items.len(),
            "{why}; retrying (the pipeline waits meanwhile)"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_lines_are_escaped_and_subsets_keep_bytes() {
        let mut c = Chunk::default();
        c.push(3, "idx", "a\"b", br#"{"x":1}"#);
        c.push(5, "idx", "c", br#"{"x":2}"#);
        let text = String::from_utf8(c.body.clone()).unwrap();
        assert_eq!(text, "{\"index\":{\"_index\":\"idx\",\"_id\":\"a\\\"b\"}}\n{\"x\":1}\n{\"index\":{\"_index\":\"idx\",\"_id\":\"c\"}}\n{\"x\":2}\n");
        let s = c.subset(&c.items[1..].to_vec());
        assert_eq!(s.items[0].index, 5);
        assert_eq!(
            String::from_utf8(s.body).unwrap(),
            "{\"index\":{\"_index\":\"idx\",\"_id\":\"c\"}}\n{\"x\":2}\n"
        );
    }

    #[test]
    fn items_are_judged_one_by_one() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"t","_id":"1","status":201}},
            {"index":{"_index":"t","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_index":"t","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n] of type [long]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}},
            {"index":{"_index":"t","_id":"4","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
            {"index":{"_index":"t","_id":"5","status":200}}]}"#;
        let o = judge(body, 5).unwrap();
        assert_eq!(o.acknowledged, 2);
        assert_eq!(o.retry, [1, 3]);
        assert_eq!(o.refused.len(), 1);
        assert_eq!(o.refused[0].0, 2);
        assert_eq!(
            o.refused[0].1,
            "mapper_parsing_exception: failed to parse field [n] of type [long] (caused by illegal_argument_exception: For input string: \"x\")"
        );
        assert!(
            judge(body, 4).is_err(),
            "a count mismatch is never taken for success"
        );
        assert!(judge(b"{}", 1).is_err());
    }
}
