//! `dedupe` (JSON in, JSON out): passes the first record of every key and
//! drops later ones. The set of seen keys lives in the host's keyed state
//! (`sluice:plugin/state`), so it is checkpointed with the source positions
//! and survives restarts; the host applies a call's state writes only if the
//! call succeeds, so a retried or bisected batch never sees its own earlier
//! attempt.
//!
//! Config: `{ key = "id", trap_on = "..." }`.
//! - `key`: the top-level field whose value identifies a record (a record
//!   without it is rejected with `missing_key`);
//! - `trap_on` (tests only): after writing the batch's keys to state, panic if
//!   any record's bytes contain this substring — a stateful plugin that fails
//!   part-way, for the host's containment tests.
//!
//! `init` checks that the state was written by a stage keyed on the same
//! field: changing `key` over an existing checkpoint would silently treat
//! every old key as new, so it is refused.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use sluice_plugin_sdk::{export_transform, state, Batch, Config, Format, JsonOutput, Transform, Transformed};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupeConfig {
    key: String,
    #[serde(default)]
    trap_on: Option<String>,
}

/// State keys: `k:` + the key's JSON text for seen keys, and one marker with
/// the key field, so the two can never collide.
const MARKER: &[u8] = b"m:key";

fn state_key(v: &Value) -> Vec<u8> {
    let mut k = b"k:".to_vec();
    k.extend_from_slice(v.to_string().as_bytes());
    k
}

struct Dedupe {
    cfg: DedupeConfig,
}

impl Transform for Dedupe {
    const TAKES: Format = Format::Json;
    const EMITS: Format = Format::Json;
    const STATE_VERSION: u32 = 1;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: DedupeConfig = config.parse()?;
        if cfg.key.is_empty() {
            return Err("key must name a field".to_owned());
        }
        match state::get_many(&[MARKER.to_vec()]).pop().flatten() {
            Some(k) if k != cfg.key.as_bytes() => {
                return Err(format!(
                    "the checkpointed state holds keys of field {:?} but key is now {:?}; start over from an empty checkpoint to change it",
                    String::from_utf8_lossy(&k),
                    cfg.key
                ))
            }
            Some(_) => {}
            None => state::put_many(&[(MARKER.to_vec(), cfg.key.as_bytes().to_vec())]),
        }
        Ok(Self { cfg })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let mut out = JsonOutput::for_input(&input);
        // One state read for the whole batch.
        let mut keyed = Vec::with_capacity(input.json_len());
        for (i, doc) in input.json_records()? {
            let key = serde_json::from_slice::<Value>(doc).ok().and_then(|v| v.get(&self.cfg.key).cloned());
            match key {
                Some(k) if !k.is_null() => keyed.push((i, doc, state_key(&k))),
                _ => out.reject(i, "missing_key", format!("no field {:?} to deduplicate on", self.cfg.key)),
            }
        }
        let keys: Vec<Vec<u8>> = keyed.iter().map(|(_, _, k)| k.clone()).collect();
        let seen = state::get_many(&keys);
        let mut new_keys = HashSet::new();
        for ((i, doc, k), before) in keyed.iter().zip(seen) {
            if before.is_none() && new_keys.insert(k.clone()) {
                out.push_raw(*i, doc);
            }
        }
        let mut writes: Vec<(Vec<u8>, Vec<u8>)> = new_keys.into_iter().map(|k| (k, Vec::new())).collect();
        writes.sort();
        state::put_many(&writes);
        if let Some(needle) = self.cfg.trap_on.as_deref().filter(|n| !n.is_empty()) {
            if input.json_records()?.any(|(_, d)| d.windows(needle.len()).any(|w| w == needle.as_bytes())) {
                panic!("dedupe: trap_on {needle:?} matched (after writing state)");
            }
        }
        Ok(out.finish())
    }
}

export_transform!(Dedupe);
