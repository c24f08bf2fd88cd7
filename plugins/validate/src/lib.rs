//! `validate` (Arrow in, Arrow out): the NYC-taxi validate rules over columns.
//! Refuses corrupt and implausible trips with a code and message; passes the
//! rest typed, with timestamps normalised to UTC. Config: `taxi_logic::ValidateConfig`.

use sluice_plugin_sdk::{export_transform, info, Batch, Config, Format, Rejection, Transform, Transformed};
use taxi_logic::{columnar, ValidateConfig};

struct Validate {
    cfg: ValidateConfig,
}

impl Transform for Validate {
    const TAKES: Format = Format::Arrow;
    const EMITS: Format = Format::Arrow;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: ValidateConfig = config.parse()?;
        cfg.check()?;
        info!("validate: {cfg:?}");
        Ok(Self { cfg })
    }

    fn process(&mut self, input: Batch) -> Result<Transformed, String> {
        let batch = input.into_record_batch()?;
        let (out, origin, rejected) = columnar::validate(&self.cfg, &batch);
        let rejected = rejected.into_iter().map(|r| Rejection::new(r.index, r.code, r.message)).collect();
        Transformed::arrow(&out, origin, rejected)
    }
}

export_transform!(Validate);
