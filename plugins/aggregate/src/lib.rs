//! `aggregate` (aggregate; JSON in, JSON out): windowed count/sum/avg/min/max
//! of named fields, grouped by named fields, configured without code.
//!
//! ```toml
//! [stages.per_station]
//! plugin = ".../aggregate.wasm"
//! inputs = ["readings"]
//! config = { time_field = "ts", group_by = ["station"],
//!            metrics = [{ op = "count" }, { op = "avg", field = "temp_c" }, { op = "max", field = "wind" }] }
//! [stages.per_station.window]
//! tumbling = "1m"
//! ```
//!
//! Key: the JSON array of the group values; event time: `time_field`
//! (`time_format`: auto | epoch_ms | epoch_s | iso8601); value: one f64 per
//! numeric field; state: count, and per field min, max and an exact sum
//! (see [`acc`]). Records without the time field or a metric's field, or
//! with a value that is not a number, are refused with a code.
//!
//! Modules: [`config`] (keys and `init` checks), [`record`] (one record →
//! key/time/value), [`acc`] (state), [`output`] (the window's document).

pub mod acc;
pub mod config;
pub mod output;
pub mod record;

use sluice_plugin_sdk::{
    error, export_aggregate, info, state, Aggregate, Batch, Config, Extracted, Format, Group,
    Window,
};

use acc::Acc;
use config::{AggConfig, Plan};

/// The stage state key holding the layout the open windows were accumulated under.
const LAYOUT_KEY: &[u8] = b"layout";

struct Aggregator {
    plan: Plan,
}

impl Aggregate for Aggregator {
    const TAKES: Format = Format::Json;
    const STATE_VERSION: u32 = 1;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: AggConfig = config.parse()?;
        let plan = cfg.plan()?;
        // Window states are laid out by the metrics: refuse to read states of
        // another layout instead of misreading them.
        let layout = AggConfig::layout(&plan);
        match state::get_many(&[LAYOUT_KEY.to_vec()]).pop().flatten() {
            Some(old) if old != layout.as_bytes() => return Err(format!(
                "the checkpointed windows were accumulated for other metrics ({}); now {layout}. \
                     Finish them with the old config, or start from an empty checkpoint",
                String::from_utf8_lossy(&old)
            )),
            Some(_) => {}
            None => state::put_many(&[(LAYOUT_KEY.to_vec(), layout.into_bytes())]),
        }
        info!("aggregate: {cfg:?}");
        Ok(Self { plan })
    }

    fn extract(&mut self, input: Batch, out: &mut Extracted) -> Result<(), String> {
        for (i, doc) in input.json_records()? {
            match record::extract(&self.plan, doc) {
                Ok(e) => out.push(i, &e.key, e.time_ms, &e.value),
                Err((code, message)) => out.reject(i, code, message),
            }
        }
        Ok(())
    }

    fn accumulate(&mut self, g: Group<'_>) -> Result<Vec<u8>, String> {
        let fields = self.plan.numeric.len();
        let mut acc = match g.state {
            Some(s) => Acc::decode(s, fields)?,
            None => Acc::new(fields),
        };
        for v in g.values {
            acc.add(v)?;
        }
        Ok(acc.encode())
    }

    fn finish(&mut self, window: Window, key: &[u8], state: &[u8]) -> Option<Vec<u8>> {
        let doc = Acc::decode(state, self.plan.numeric.len())
            .and_then(|acc| output::document(&self.plan, key, &acc));
        match doc {
            Ok(d) => Some(d),
            Err(e) => {
                error!(
                    "window [{}, {}) group {}: {e}",
                    window.start_ms,
                    window.end_ms,
                    String::from_utf8_lossy(key)
                );
                None
            }
        }
    }
}

export_aggregate!(Aggregator);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use sluice_plugin_sdk::Blobs;
    use std::collections::BTreeMap;

    /// The host's part, for one tumbling window size: group by (window, key), accumulate per batch, finish.
    fn run(cfg: &str, batches: &[&[&str]], size: i64) -> Vec<(i64, Value)> {
        let mut p = Aggregator::init(Config::new(cfg.to_owned())).unwrap();
        let mut states: BTreeMap<(i64, Vec<u8>), Vec<u8>> = BTreeMap::new();
        for docs in batches {
            let mut x = Extracted::new();
            p.extract(Batch::from_json_docs(docs.iter().map(|d| d.as_bytes())), &mut x)
                .unwrap();
            let mut groups: BTreeMap<(i64, Vec<u8>), Blobs> = BTreeMap::new();
            for k in x.records() {
                groups
                    .entry((k.event_time_ms.div_euclid(size) * size, k.key.to_vec()))
                    .or_default()
                    .push(k.value);
            }
            for ((w, key), values) in groups {
                let window = Window {
                    start_ms: w,
                    end_ms: w + size,
                };
                let state = states.get(&(w, key.clone())).cloned();
                let g = Group {
                    window,
                    key: &key,
                    state: state.as_deref(),
                    values: values.iter(),
                };
                let s = p.accumulate(g).unwrap();
                states.insert((w, key), s);
            }
        }
        states
            .into_iter()
            .map(|((w, key), s)| {
                let d = p
                    .finish(
                        Window {
                            start_ms: w,
                            end_ms: w + size,
                        },
                        &key,
                        &s,
                    )
                    .unwrap();
                (w, serde_json::from_slice(&d).unwrap())
            })
            .collect()
    }

    #[test]
    fn groups_and_metrics_per_window() {
        let cfg = r#"{"time_field": "ts", "group_by": ["site"], "metrics": [
            {"op": "count"}, {"op": "sum", "field": "v"}, {"op": "avg", "field": "v"},
            {"op": "min", "field": "v"}, {"op": "max", "field": "v", "as": "top"}]}"#;
        let out = run(
            cfg,
            &[
                &[
                    r#"{"ts": 1000, "site": "a", "v": 1}"#,
                    r#"{"ts": 61000, "site": "a", "v": 10}"#,
                    r#"{"ts": 2000, "v": 4}"#,
                ],
                &[
                    r#"{"ts": 59999, "site": "a", "v": 0.5}"#,
                    r#"{"ts": 3000, "site": "a", "v": "x"}"#,
                ],
            ],
            60_000,
        );
        assert_eq!(
            out,
            vec![
                (
                    0,
                    json!({"site": "a", "count": 2, "sum_v": 1.5, "avg_v": 0.75, "min_v": 0.5, "top": 1.0})
                ),
                (
                    0,
                    json!({"site": null, "count": 1, "sum_v": 4.0, "avg_v": 4.0, "min_v": 4.0, "top": 4.0})
                ),
                (
                    60_000,
                    json!({"site": "a", "count": 1, "sum_v": 10.0, "avg_v": 10.0, "min_v": 10.0, "top": 10.0})
                ),
            ]
        );
    }

    #[test]
    fn init_refuses_a_changed_layout_over_existing_state() {
        let a = r#"{"time_field": "t", "metrics": [{"op": "sum", "field": "x"}]}"#;
        let b = r#"{"time_field": "t", "metrics": [{"op": "sum", "field": "y"}]}"#;
        assert!(Aggregator::init(Config::new(a.into())).is_ok());
        assert!(Aggregator::init(Config::new(a.into())).is_ok());
        let e = Aggregator::init(Config::new(b.into())).err().unwrap();
        assert!(e.contains("accumulated for other metrics"), "{e}");
    }
}
