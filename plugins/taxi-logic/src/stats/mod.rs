//! Windowed trip statistics per vendor (the `trip-stats` aggregate plugin's
//! logic, as plain Rust so it is tested and benchmarked natively).
//!
//! The host owns windows and state; this module supplies the three pure steps
//! of the aggregate contract:
//!
//! - [`extract`]: an Arrow batch of (validated or enriched) trips → per trip
//!   the vendor (the key), the pickup time (event time) and a [`Trip`] (the
//!   value, 29 bytes), plus rejections;
//! - [`WindowStats::add`] / [`WindowStats::encode`]: the per-(window, vendor)
//!   state, a few integer sums and a sparse pickup-hour histogram;
//! - [`report`]: a closed window's state and the vendor's running
//!   [`Baseline`] → the output document and the updated baseline.
//!
//! Every sum is an integer (seconds, millimetres, 1e-7 degrees), so a
//! window's state does not depend on how its trips were split into batches
//! or in which order they arrived: a replay after a restart reproduces the
//! same values bit for bit.

mod codec;
mod extract;
mod report;

use serde::{Deserialize, Serialize};

pub use codec::{Baseline, Trip, WindowStats, TRIP_BYTES};
pub use extract::{extract, Keyed};
pub use report::{report, Location, Report};

/// Configuration of the `trip-stats` stage (`[stages.X] config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Windows with fewer trips than this get `pickup_location: null`.
    pub location_min_trips: u64,
    /// Decimals the average pickup location is rounded to (0–3; 2 ≈ 1.1 km
    /// north–south by 0.85 km east–west in New York).
    pub location_decimals: u32,
    /// Weight of the newest window in the vendor's running baseline
    /// (exponentially weighted mean and variance of the average duration).
    pub baseline_alpha: f64,
    /// Windows a vendor's baseline needs before `anomaly_score` is computed
    /// (0.0 until then).
    pub baseline_min_windows: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            location_min_trips: 5,
            location_decimals: 2,
            baseline_alpha: 0.1,
            baseline_min_windows: 5,
        }
    }
}

impl StatsConfig {
    /// Refuses settings that would leak single trips or make the score meaningless.
    pub fn check(&self) -> Result<(), String> {
        if self.location_min_trips < 2 {
            return Err(format!(
                "location_min_trips must be at least 2 (one trip's location must not be published), got {}",
                self.location_min_trips
            ));
        }
        if self.location_decimals > 3 {
            return Err(format!(
                "location_decimals must be 0..=3 (more would locate small groups of trips to a street), got {}",
                self.location_decimals
            ));
        }
        if !(self.baseline_alpha > 0.0 && self.baseline_alpha <= 1.0) {
            return Err(format!(
                "baseline_alpha must be in (0, 1], got {}",
                self.baseline_alpha
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_refuse_leaky_or_meaningless_settings() {
        assert!(StatsConfig::default().check().is_ok());
        for bad in [
            StatsConfig {
                location_min_trips: 1,
                ..Default::default()
            },
            StatsConfig {
                location_decimals: 4,
                ..Default::default()
            },
            StatsConfig {
                baseline_alpha: 0.0,
                ..Default::default()
            },
            StatsConfig {
                baseline_alpha: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let e = serde_json::from_str::<StatsConfig>(r#"{"location_min_trip": 3}"#).unwrap_err();
        assert!(e.to_string().contains("location_min_trip"), "{e}");
    }
}
