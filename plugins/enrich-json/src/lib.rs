//! `enrich_json` (JSON in, JSON out): the same rules as `enrich`, one JSON
//! document per record. Config: `taxi_logic::EnrichConfig`.

use sluice_plugin_sdk::{export_transform, info, Batch, Config, Format, Rejection, Transform, Transformed};
use taxi_logic::{json, EnrichConfig};

struct EnrichJson {
    cfg: EnrichConfig,
}

impl Transform for EnrichJson {
    const TAKES: Format = Format::Json;
    const EMITS: Format = Format::Json;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: EnrichConfig = config.parse()?;
        info!("enrich_json: {cfg:?}");
        Ok(Self { cfg })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let out = json::enrich(&self.cfg, &input.data, &input.offsets);
        let rejected = out.rejected.into_iter().map(|r| Rejection::new(r.index, r.code, r.message)).collect();
        let output = Batch { format: Format::Json, data: out.buf, offsets: out.offsets };
        Ok(Transformed::new(output, out.origin, rejected))
    }
}

export_transform!(EnrichJson);
