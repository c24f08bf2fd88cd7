//! The NYC-taxi `validate` and `enrich` rules, once, in two forms (and the
//! `trip-stats` aggregate's logic, [`stats`]):
//!
//! - [`json`]: one JSON document per record (the simple path; serde).
//! - [`columnar`]: Arrow record batches, column at a time (the fast path).
//!
//! Both forms share the field table, the value conversions, the range checks
//! and the messages ([`rules`]), so the same input gives the same output and
//! the same rejections either way (tests/agreement.rs holds them to it).
//! The Wasm plugins wrap these functions; the host's native benchmark calls
//! them directly to measure the Wasm overhead.
//!
//! Module map:
//! - [`config`]   — `ValidateConfig`, `EnrichConfig` (serde, defaults, checks)
//! - [`schema`]   — the Arrow schemas of validated and enriched records
//! - [`time`]     — timestamp parsing/formatting, civil calendar
//! - [`rules`]    — field table, value conversions, range checks, haversine
//! - [`num`]      — exact fast paths for parsing numbers
//! - [`json`]     — the JSON form
//! - [`columnar`] — the Arrow form
//! - [`stats`]    — windowed per-vendor trip statistics (the `trip-stats` aggregate)

pub mod columnar;
pub mod config;
pub mod json;
pub mod num;
pub mod rules;
pub mod schema;
pub mod stats;
pub mod time;

pub use config::{BBox, EnrichConfig, ValidateConfig};
pub use json::Out;

/// A record the rules refuse; `index` is the input record's index in its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: u32,
    pub code: String,
    pub message: String,
}

/// The stable rejection codes (they land in the dead-letter queue).
pub mod codes {
    /// Not JSON, not an object, or a value of the wrong shape (an object where a string belongs).
    pub const MALFORMED: &str = "malformed";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const NOT_NUMERIC: &str = "not_numeric";
    pub const BAD_TIMESTAMP: &str = "bad_timestamp";
    pub const OUT_OF_BOUNDS: &str = "out_of_bounds";
    /// Dropoff not after pickup, or longer than `max_duration_s`.
    pub const BAD_DURATION: &str = "bad_duration";
    pub const BAD_PASSENGER_COUNT: &str = "bad_passenger_count";
}
