//! Counts records per key and window. Key: the value of the configured `key`
//! field (default `vendorId`); event time: the `time` field, epoch ms (default
//! `eventTimeMs`). State: the count as 8 little-endian bytes.

use serde::Deserialize;
use sluice_plugin_sdk::{
    export_aggregate, Aggregate, Batch, Config, Extracted, Format, Group, Keyed, Rejection, Window,
};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CountConfig {
    key: String,
    time: String,
}

impl Default for CountConfig {
    fn default() -> Self {
        Self { key: "vendorId".into(), time: "eventTimeMs".into() }
    }
}

struct Count {
    cfg: CountConfig,
}

fn count(state: Option<&[u8]>) -> u64 {
    state.and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

impl Aggregate for Count {
    const TAKES: Format = Format::Json;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Self { cfg: config.parse()? })
    }

    fn extract(&mut self, input: Batch) -> Result<Extracted, String> {
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for (i, v) in input.parse_records::<serde_json::Value>()? {
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    rejected.push(Rejection::new(i, "malformed", e));
                    continue;
                }
            };
            match (v.get(&self.cfg.key), v.get(&self.cfg.time).and_then(|t| t.as_i64())) {
                (Some(k), Some(t)) => records.push(Keyed {
                    index: i,
                    key: k.to_string().into_bytes(),
                    event_time_ms: t,
                    value: Vec::new(),
                }),
                _ => rejected.push(Rejection::new(i, "missing_field", format!("need {} and {}", self.cfg.key, self.cfg.time))),
            }
        }
        Ok(Extracted { records, rejected })
    }

    fn accumulate(&mut self, groups: Vec<Group>) -> Result<Vec<Vec<u8>>, String> {
        Ok(groups
            .iter()
            .map(|g| (count(g.state.as_deref()) + g.values.len() as u64).to_le_bytes().to_vec())
            .collect())
    }

    fn finish(&mut self, window: Window, key: Vec<u8>, state: Vec<u8>) -> Option<Vec<u8>> {
        let doc = serde_json::json!({
            "windowStartMs": window.start_ms,
            "windowEndMs": window.end_ms,
            "key": String::from_utf8_lossy(&key),
            "count": count(Some(&state)),
        });
        serde_json::to_vec(&doc).ok()
    }
}

export_aggregate!(Count);
