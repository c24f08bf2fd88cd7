//! `validate_json` (JSON in, JSON out): the same rules as `validate`, one
//! JSON document per record. Output documents are canonical: schema fields in
//! order, typed, ISO 8601 UTC timestamps. Config: `taxi_logic::ValidateConfig`.

use sluice_plugin_sdk::{export_transform, info, Batch, Config, Format, Rejection, Transform, Transformed};
use taxi_logic::{json, ValidateConfig};

struct ValidateJson {
    cfg: ValidateConfig,
}

impl Transform for ValidateJson {
    const TAKES: Format = Format::Json;
    const EMITS: Format = Format::Json;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: ValidateConfig = config.parse()?;
        cfg.check()?;
        info!("validate_json: {cfg:?}");
        Ok(Self { cfg })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let out = json::validate(&self.cfg, &input.data, &input.offsets);
        let rejected = out.rejected.into_iter().map(|r| Rejection::new(r.index, r.code, r.message)).collect();
        let output = Batch { format: Format::Json, data: out.buf, offsets: out.offsets };
        Ok(Transformed::new(output, out.origin, rejected))
    }
}

export_transform!(ValidateJson);
