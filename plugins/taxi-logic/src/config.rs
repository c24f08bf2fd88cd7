//! Stage configuration, deserialised from the stage's `config` table (JSON).
//! Unknown keys are errors so a typo does not silently fall back to a default.

use serde::{Deserialize, Serialize};

/// Inclusive bounding box for pickup and dropoff coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BBox {
    pub min_lon: f64,
    pub max_lon: f64,
    pub min_lat: f64,
    pub max_lat: f64,
}

impl Default for BBox {
    /// New York City's five boroughs plus Newark airport.
    fn default() -> Self {
        Self { min_lon: -74.3, max_lon: -73.6, min_lat: 40.45, max_lat: 41.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateConfig {
    pub bbox: BBox,
    pub min_passengers: i32,
    pub max_passengers: i32,
    /// Trips longer than this are rejected as `bad_duration`.
    pub max_duration_s: i64,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self { bbox: BBox::default(), min_passengers: 1, max_passengers: 9, max_duration_s: 86_400 }
    }
}

impl ValidateConfig {
    /// Parses a stage config; empty text or `null` means all defaults.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let cfg: Self = parse_or_default(text)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Rejects configurations under which every record would be refused.
    pub fn check(&self) -> Result<(), String> {
        let b = &self.bbox;
        let finite = [b.min_lon, b.max_lon, b.min_lat, b.max_lat].iter().all(|v| v.is_finite());
        if !finite || b.min_lon > b.max_lon || b.min_lat > b.max_lat {
            return Err(format!(
                "bbox must have finite min_lon <= max_lon and min_lat <= max_lat, got {b:?}"
            ));
        }
        if self.min_passengers > self.max_passengers {
            return Err(format!(
                "min_passengers ({}) must not exceed max_passengers ({})",
                self.min_passengers, self.max_passengers
            ));
        }
        if self.max_duration_s <= 0 {
            return Err(format!("max_duration_s must be positive, got {}", self.max_duration_s));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// Value of the `source` column, for traceability downstream.
    pub source: String,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self { source: "sluice".to_owned() }
    }
}

impl EnrichConfig {
    /// Parses a stage config; empty text or `null` means all defaults.
    pub fn from_json(text: &str) -> Result<Self, String> {
        parse_or_default(text)
    }
}

fn parse_or_default<T: Default + for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_keeps_other_defaults() {
        let c = ValidateConfig::from_json(r#"{"bbox": {"min_lon": -75}, "max_passengers": 6}"#).unwrap();
        assert_eq!(c.bbox.min_lon, -75.0);
        assert_eq!(c.bbox.max_lat, 41.0);
        assert_eq!(c.max_passengers, 6);
        assert_eq!(c.min_passengers, 1);
        assert_eq!(ValidateConfig::from_json("").unwrap(), ValidateConfig::default());
        assert_eq!(EnrichConfig::from_json("{}").unwrap().source, "sluice");
    }

    #[test]
    fn unknown_keys_and_impossible_ranges_are_errors() {
        let e = ValidateConfig::from_json(r#"{"max_pasengers": 6}"#).unwrap_err();
        assert!(e.contains("max_pasengers"), "{e}");
        assert!(ValidateConfig::from_json(r#"{"min_passengers": 5, "max_passengers": 2}"#).is_err());
        assert!(ValidateConfig::from_json(r#"{"bbox": {"min_lat": 42}}"#).is_err());
        assert!(EnrichConfig::from_json(r#"{"sorce": "x"}"#).is_err());
    }
}
