//! A minimal sluice plugin: upper-cases one string field of every record.
//!
//! Pipeline TOML (the stage is named by its table, `shout` here):
//!
//! ```toml
//! [stages.shout]
//! inputs = ["trips"]
//! plugin = "plugins/target/wasm32-wasip2/release/template.wasm"
//! config = { field = "storeAndFwdFlag" }
//! ```

use serde::Deserialize;
use serde_json::Value;
use sluice_plugin_sdk::{export_transform, info, Batch, Config, Format, JsonOutput, Transform, Transformed};

/// The stage's `config` table. `deny_unknown_fields` turns a typo into an
/// error at pipeline start instead of a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpperConfig {
    /// The field to upper-case.
    field: String,
}

/// One instance per stage; `process` may keep state in `self` between batches
/// (it is lost on restart: use `sluice_plugin_sdk::state` for state that must survive).
struct Upper {
    field: String,
}

impl Transform for Upper {
    // JSON in, JSON out: the simple path. Arrow (feature "arrow" of the SDK)
    // is the fast path for columnar work; the host converts between the two
    // when neighbouring stages disagree.
    const TAKES: Format = Format::Json;
    const EMITS: Format = Format::Json;

    /// Called once before any batch. An `Err` stops the pipeline from starting.
    fn init(config: Config) -> Result<Self, String> {
        let cfg: UpperConfig = config.parse()?;
        info!("upper-casing field {:?}", cfg.field);
        Ok(Upper { field: cfg.field })
    }

    /// Called per batch. Bad records become rejections (they go to the
    /// dead-letter queue with the code and message); `Err` fails the whole batch.
    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let mut out = JsonOutput::for_input(&input);
        for (i, parsed) in input.parse_records::<Value>()? {
            let mut record = match parsed {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    out.reject(i, "malformed", "record is not a JSON object");
                    continue;
                }
                Err(e) => {
                    out.reject(i, "malformed", format!("record is not valid JSON: {e}"));
                    continue;
                }
            };
            match record.get_mut(&self.field) {
                Some(Value::String(s)) => *s = s.to_uppercase(),
                Some(Value::Null) | None => {} // nothing to do; pass the record on
                Some(other) => {
                    out.reject(i, "not_a_string", format!("{} is not a string: {other}", self.field));
                    continue;
                }
            }
            // `i` is the input index: output records name where they came from
            // (filters skip indexes, explodes repeat them).
            out.push(i, &record)?;
        }
        Ok(out.finish())
    }
}

export_transform!(Upper);

#[cfg(test)]
mod tests {
    use super::*;

    // Plugins are plain Rust: test them natively with
    // `cargo test-native -p template` (from plugins/).
    #[test]
    fn upper_cases_the_field_and_rejects_non_objects() {
        let mut p = Upper::init(Config::new(r#"{"field": "flag"}"#.into())).unwrap();
        let input = Batch::from_json_docs([&br#"{"flag":"y","n":1}"#[..], b"[1]", br#"{"n":2}"#]);
        let t = p.process(input).unwrap();
        assert_eq!(t.origin, vec![0, 2]);
        assert_eq!(t.rejected[0].index, 1);
        let docs: Vec<&[u8]> = t.output.json_records().unwrap().map(|(_, d)| d).collect();
        assert_eq!(docs, vec![&br#"{"flag":"Y","n":1}"#[..], br#"{"n":2}"#]);
        assert!(Upper::init(Config::new(r#"{"feild": "x"}"#.into())).is_err());
    }
}
