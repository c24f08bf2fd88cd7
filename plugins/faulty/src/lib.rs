//! `faulty` (JSON in, JSON out): passes records through unchanged until
//! triggered, then misbehaves, so the host's containment can be tested against
//! a real component.
//!
//! Config: `{"mode": "ok"|"trap"|"loop"|"oom"|"error", "when": "always"|"<substring>[|<substring>...]"}`.
//! It triggers on a batch containing a record whose bytes contain one of the
//! `|`-separated substrings of `when` (or on every batch for "always"), and then:
//! - `trap`: panics (a Wasm trap: `unreachable`);
//! - `loop`: spins forever (the host's epoch deadline must stop it);
//! - `oom`: allocates and touches memory until allocation fails (store limits must stop it);
//! - `error`: returns `Err` from `process`.

use std::hint::black_box;

use serde::Deserialize;
use sluice_plugin_sdk::{export_transform, warn, Batch, Config, Format, JsonOutput, Transform, Transformed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Ok,
    Trap,
    Loop,
    Oom,
    Error,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FaultyConfig {
    mode: Mode,
    when: String,
}

impl Default for FaultyConfig {
    fn default() -> Self {
        Self { mode: Mode::Ok, when: "always".to_owned() }
    }
}

struct Faulty {
    cfg: FaultyConfig,
}

impl Faulty {
    fn triggered(&self, input: &Batch) -> Result<bool, String> {
        if self.cfg.when == "always" {
            return Ok(true);
        }
        let needles: Vec<&[u8]> = self.cfg.when.split('|').filter(|n| !n.is_empty()).map(str::as_bytes).collect();
        Ok(input.json_records()?.any(|(_, doc)| needles.iter().any(|n| doc.windows(n.len()).any(|w| w == *n))))
    }
}

impl Transform for Faulty {
    const TAKES: Format = Format::Json;
    const EMITS: Format = Format::Json;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: FaultyConfig = config.parse()?;
        if cfg.when.split('|').all(str::is_empty) {
            return Err("when must be \"always\" or a non-empty substring".to_owned());
        }
        Ok(Self { cfg })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        if self.cfg.mode != Mode::Ok && self.triggered(&input)? {
            warn!("faulty: triggered, mode {:?}", self.cfg.mode);
            match self.cfg.mode {
                Mode::Ok => {}
                Mode::Trap => panic!("faulty: trap requested (when = {:?})", self.cfg.when),
                Mode::Loop => {
                    let mut n: u64 = 0;
                    loop {
                        n = black_box(n.wrapping_add(1));
                    }
                }
                Mode::Oom => {
                    let mut hog: Vec<Vec<u8>> = Vec::new();
                    loop {
                        // Touch every page so the memory is really committed.
                        hog.push(vec![1u8; 1 << 20]);
                        black_box(&hog);
                    }
                }
                Mode::Error => return Err(format!("faulty: error requested (when = {:?})", self.cfg.when)),
            }
        }
        let mut out = JsonOutput::for_input(&input);
        for (i, doc) in input.json_records()? {
            out.push_raw(i, doc);
        }
        Ok(out.finish())
    }
}

export_transform!(Faulty);
