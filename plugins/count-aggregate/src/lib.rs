//! Counts records per key and window. Key: the value of the configured `key`
//! field (default `vendorId`); event time: the `time` field, epoch ms (default
//! `eventTimeMs`). State: the count as 8 little-endian bytes.
//!
//! Built with the `v2` feature (the `count-aggregate-v2` crate) it is the
//! same plugin at state-version 1, whose state is `c2` + the count as 8
//! big-endian bytes: it migrates version-0 states, or refuses to when its
//! config says `fail_migrate = true` (tests of upgrades use both). It also
//! numbers the windows it finished (`finished`), kept in the stage's keyed
//! state: the aggregator world's `state` import at work.
//!
//! The plain build exports contract 0.1.0 (`export_aggregate_0_1!`), the
//! `v2` build 0.2.0: tests of the host's support for both come with it.

use serde::Deserialize;
use sluice_plugin_sdk::{Aggregate, Batch, Config, Extracted, Format, Group, Window};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CountConfig {
    key: String,
    time: String,
    /// `v2` only: `migrate` fails (to test a failed upgrade).
    fail_migrate: bool,
}

impl Default for CountConfig {
    fn default() -> Self {
        Self { key: "vendorId".into(), time: "eventTimeMs".into(), fail_migrate: false }
    }
}

struct Count {
    cfg: CountConfig,
}

#[cfg(not(feature = "v2"))]
const STATE_VERSION: u32 = 0;
#[cfg(feature = "v2")]
const STATE_VERSION: u32 = 1;

/// Version-0 state.
fn count_v0(state: Option<&[u8]>) -> u64 {
    state.and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

#[cfg(not(feature = "v2"))]
fn count(state: Option<&[u8]>) -> u64 {
    count_v0(state)
}

#[cfg(not(feature = "v2"))]
fn encode(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

#[cfg(feature = "v2")]
fn count(state: Option<&[u8]>) -> u64 {
    // A state that is not version 1 is a host bug: fail loudly.
    state.map_or(0, |s| {
        let b = s.strip_prefix(b"c2").expect("state-version 1 state");
        u64::from_be_bytes(b.try_into().expect("8 bytes"))
    })
}

#[cfg(feature = "v2")]
fn encode(n: u64) -> Vec<u8> {
    [b"c2".as_slice(), &n.to_be_bytes()].concat()
}

impl Aggregate for Count {
    const TAKES: Format = Format::Json;
    const STATE_VERSION: u32 = STATE_VERSION;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Self { cfg: config.parse()? })
    }

    fn extract(&mut self, input: Batch, out: &mut Extracted) -> Result<(), String> {
        for (i, v) in input.parse_records::<serde_json::Value>()? {
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    out.reject(i, "malformed", e);
                    continue;
                }
            };
            match (v.get(&self.cfg.key), v.get(&self.cfg.time).and_then(|t| t.as_i64())) {
                (Some(k), Some(t)) => out.push(i, k.to_string().as_bytes(), t, &[]),
                _ => out.reject(i, "missing_field", format!("need {} and {}", self.cfg.key, self.cfg.time)),
            }
        }
        Ok(())
    }

    fn accumulate(&mut self, g: Group<'_>) -> Result<Vec<u8>, String> {
        Ok(encode(count(g.state) + g.values.len() as u64))
    }

    fn finish(&mut self, window: Window, key: &[u8], state: &[u8]) -> Option<Vec<u8>> {
        let doc = serde_json::json!({
            "windowStartMs": window.start_ms,
            "windowEndMs": window.end_ms,
            "key": String::from_utf8_lossy(key),
            "count": count(Some(state)),
        });
        #[cfg(feature = "v2")]
        let doc = {
            // v2 also numbers the windows it finished, in the stage's keyed
            // state: a running number that is only right if `finish` writes
            // persist (and count once) across restarts.
            let mut doc = doc;
            let n = sluice_plugin_sdk::state::get_many(&[b"finished".to_vec()])[0]
                .as_deref()
                .and_then(|v| v.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
                + 1;
            sluice_plugin_sdk::state::put_many(&[(b"finished".to_vec(), n.to_le_bytes().to_vec())]);
            doc["finished"] = n.into();
            doc
        };
        serde_json::to_vec(&doc).ok()
    }

    fn migrate(&mut self, from_state_version: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
        match from_state_version {
            _ if self.cfg.fail_migrate => Err("refusing to migrate (fail_migrate = true)".into()),
            v if v == STATE_VERSION => Ok(state),
            0 => Ok(encode(count_v0(Some(&state)))),
            v => Err(format!("unknown state-version {v}")),
        }
    }
}

// Version 0 is built against contract 0.1.0 and `v2` against 0.2.0: the
// upgrade tests then also cover a checkpoint written through one contract
// and migrated through the other, and the host's support for 0.1.0.
#[cfg(not(feature = "v2"))]
sluice_plugin_sdk::export_aggregate_0_1!(Count);
#[cfg(feature = "v2")]
sluice_plugin_sdk::export_aggregate!(Count);
