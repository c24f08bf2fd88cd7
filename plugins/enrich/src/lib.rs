//! `enrich` (Arrow in, Arrow out): adds `source`, fills gcDistance (haversine
//! km) and tripDuration (s) where absent, and adds the partition fields
//! year/month/day/hour of pickupDate (UTC). Config: `taxi_logic::EnrichConfig`.

use sluice_plugin_sdk::{export_transform, info, Batch, Config, Format, Rejection, Transform, Transformed};
use taxi_logic::{columnar, EnrichConfig};

struct Enrich {
    cfg: EnrichConfig,
}

impl Transform for Enrich {
    const TAKES: Format = Format::Arrow;
    const EMITS: Format = Format::Arrow;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: EnrichConfig = config.parse()?;
        info!("enrich: {cfg:?}");
        Ok(Self { cfg })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let batch = input.into_record_batch()?;
        let (out, origin, rejected) = columnar::enrich(&self.cfg, &batch);
        let rejected = rejected.into_iter().map(|r| Rejection::new(r.index, r.code, r.message)).collect();
        Transformed::arrow(&out, origin, rejected)
    }
}

export_transform!(Enrich);
