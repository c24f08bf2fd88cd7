//! The rules both forms share: which fields exist and in what order, how a
//! raw value becomes a typed one, the range checks, and every message text.
//! Keeping them here is what makes the JSON and columnar forms agree.

use std::borrow::Cow;

use crate::config::ValidateConfig;
use crate::num::parse_f64;
use crate::{codes, time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    I32,
    I64,
    F64,
    Timestamp,
}

#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn def(name: &'static str, kind: Kind, required: bool) -> FieldDef {
    FieldDef { name, kind, required }
}

/// Input fields in schema order. The order also decides which problem a
/// record is rejected for when it has several (first missing field, then
/// first unparseable field, then range checks).
pub const FIELDS: [FieldDef; 14] = [
    def("id", Kind::Str, true),
    def("vendorId", Kind::I32, true),
    def("pickupDate", Kind::Timestamp, true),
    def("dropoffDate", Kind::Timestamp, true),
    def("passengerCount", Kind::I32, true),
    def("pickupLongitude", Kind::F64, true),
    def("pickupLatitude", Kind::F64, true),
    def("dropoffLongitude", Kind::F64, true),
    def("dropoffLatitude", Kind::F64, true),
    def("storeAndFwdFlag", Kind::Str, false),
    def("gcDistance", Kind::F64, false),
    def("tripDuration", Kind::I64, false),
    def("googleDistance", Kind::F64, false),
    def("googleDuration", Kind::I64, false),
];

/// Indexes into [`FIELDS`].
pub mod f {
    pub const ID: usize = 0;
    pub const VENDOR_ID: usize = 1;
    pub const PICKUP_DATE: usize = 2;
    pub const DROPOFF_DATE: usize = 3;
    pub const PASSENGER_COUNT: usize = 4;
    pub const PICKUP_LON: usize = 5;
    pub const PICKUP_LAT: usize = 6;
    pub const DROPOFF_LON: usize = 7;
    pub const DROPOFF_LAT: usize = 8;
    pub const STORE_AND_FWD: usize = 9;
    pub const GC_DISTANCE: usize = 10;
    pub const TRIP_DURATION: usize = 11;
    pub const GOOGLE_DISTANCE: usize = 12;
    pub const GOOGLE_DURATION: usize = 13;
}

/// Rank of a problem: lower wins when a record has several.
pub fn rank_missing(field: usize) -> u16 {
    field as u16
}
pub fn rank_parse(field: usize) -> u16 {
    16 + field as u16
}
pub const RANK_RANGE: u16 = 64;

/// One raw value, from a JSON document or an Arrow column.
#[derive(Debug, Clone)]
pub enum Cell<'a> {
    Null,
    /// A string value (JSON string, Utf8 column cell).
    Str(Cow<'a, str>),
    /// A JSON number literal, kept as text so it parses exactly like a CSV cell.
    Num(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Anything else (JSON object/array, unsupported column type), as shown in messages.
    Other(Cow<'a, str>),
}

impl Cell<'_> {
    /// Null and blank strings count as absent (CSV has no other way to say so).
    pub fn is_missing(&self) -> bool {
        match self {
            Cell::Null => true,
            Cell::Str(s) => s.trim_ascii().is_empty(),
            _ => false,
        }
    }

    /// The value as shown in a rejection message, bounded so one huge value
    /// cannot bloat the dead-letter queue.
    pub fn display(&self) -> String {
        let s = match self {
            Cell::Null => "null".to_owned(),
            Cell::Str(s) => serde_json::to_string(s.as_ref()).unwrap_or_default(),
            Cell::Num(t) => (*t).to_owned(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(v) => format!("{v:?}"),
            Cell::Bool(b) => b.to_string(),
            Cell::Other(t) => t.to_string(),
        };
        truncate(s, 80)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// A value that does not convert: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub code: &'static str,
    pub message: String,
}

pub fn missing(field: usize) -> Bad {
    Bad { code: codes::MISSING_FIELD, message: format!("missing field {}", FIELDS[field].name) }
}

fn not_numeric(field: usize, what: &str, cell: &Cell) -> Bad {
    Bad {
        code: codes::NOT_NUMERIC,
        message: format!("{} is not {what}: {}", FIELDS[field].name, cell.display()),
    }
}

pub fn to_f64(field: usize, cell: &Cell) -> Result<Option<f64>, Bad> {
    let v = match cell {
        c if c.is_missing() => return Ok(None),
        Cell::Str(s) => parse_f64(s.trim_ascii()),
        Cell::Num(t) => parse_f64(t),
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(v) => Some(*v),
        _ => None,
    };
    match v {
        Some(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(not_numeric(field, "a number", cell)),
    }
}

/// Integers accept integral floats ("2.0") since JSON writers and CSV tools produce them.
pub fn to_int(field: usize, cell: &Cell, min: i64, max: i64) -> Result<Option<i64>, Bad> {
    fn from_text(t: &str) -> Option<i64> {
        t.parse::<i64>().ok().or_else(|| from_float(t.parse::<f64>().ok()?))
    }
    fn from_float(v: f64) -> Option<i64> {
        // ±2^63 are exactly representable; -2^63 fits in i64, 2^63 does not.
        const TWO_63: f64 = 9_223_372_036_854_775_808.0;
        (v.fract() == 0.0 && (-TWO_63..TWO_63).contains(&v)).then_some(v as i64)
    }
    let v = match cell {
        c if c.is_missing() => return Ok(None),
        Cell::Str(s) => from_text(s.trim_ascii()),
        Cell::Num(t) => from_text(t),
        Cell::Int(i) => Some(*i),
        Cell::Float(v) => from_float(*v),
        _ => None,
    };
    match v {
        Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
        Some(_) => Err(not_numeric(field, "an integer in range", cell)),
        None => Err(not_numeric(field, "an integer", cell)),
    }
}

pub fn int_bounds(kind: Kind) -> (i64, i64) {
    match kind {
        Kind::I32 => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Epoch milliseconds. Numbers are epoch milliseconds; strings are ISO 8601
/// or "YYYY-MM-DD HH:MM:SS" (UTC unless they carry an offset) or integer epoch ms.
pub fn to_timestamp(field: usize, cell: &Cell) -> Result<Option<i64>, Bad> {
    let v = match cell {
        c if c.is_missing() => return Ok(None),
        Cell::Str(s) => time::parse_timestamp(s.trim_ascii()),
        Cell::Num(t) => match t.parse::<i64>() {
            Ok(i) => time::in_range(i),
            Err(_) => t.parse::<f64>().ok().and_then(time::from_epoch_ms_f64),
        },
        Cell::Int(i) => time::in_range(*i),
        Cell::Float(v) => time::from_epoch_ms_f64(*v),
        _ => None,
    };
    v.map(Some).ok_or_else(|| Bad {
        code: codes::BAD_TIMESTAMP,
        message: format!("{} is not a timestamp: {}", FIELDS[field].name, cell.display()),
    })
}

/// Strings accept scalars (a numeric id is still an id); objects and arrays are malformed.
pub fn to_str<'a>(field: usize, cell: &Cell<'a>) -> Result<Option<Cow<'a, str>>, Bad> {
    Ok(Some(match cell {
        c if c.is_missing() => return Ok(None),
        Cell::Str(s) => s.clone(),
        Cell::Num(t) => Cow::Borrowed(*t),
        Cell::Int(i) => Cow::Owned(i.to_string()),
        Cell::Float(v) => Cow::Owned(format!("{v:?}")),
        Cell::Bool(b) => Cow::Owned(b.to_string()),
        Cell::Null | Cell::Other(_) => {
            return Err(Bad {
                code: codes::MALFORMED,
                message: format!("{} is not a string: {}", FIELDS[field].name, cell.display()),
            })
        }
    }))
}

/// The values the range checks look at, once parsed.
#[derive(Debug, Clone, Copy)]
pub struct RangeInput {
    pub pickup_lon: f64,
    pub pickup_lat: f64,
    pub dropoff_lon: f64,
    pub dropoff_lat: f64,
    pub pickup_ms: i64,
    pub dropoff_ms: i64,
    pub trip_duration: Option<i64>,
    pub passengers: i32,
}

/// The validate range checks, in rejection order: coordinates, duration, passengers.
pub fn check_ranges(cfg: &ValidateConfig, r: &RangeInput) -> Option<Bad> {
    let b = &cfg.bbox;
    let coords = [
        (f::PICKUP_LON, r.pickup_lon, b.min_lon, b.max_lon),
        (f::PICKUP_LAT, r.pickup_lat, b.min_lat, b.max_lat),
        (f::DROPOFF_LON, r.dropoff_lon, b.min_lon, b.max_lon),
        (f::DROPOFF_LAT, r.dropoff_lat, b.min_lat, b.max_lat),
    ];
    for (field, v, lo, hi) in coords {
        if !(lo..=hi).contains(&v) {
            return Some(Bad {
                code: codes::OUT_OF_BOUNDS,
                message: format!("{} {v:?} is outside the bounding box [{lo:?}, {hi:?}]", FIELDS[field].name),
            });
        }
    }
    let max_ms = cfg.max_duration_s.saturating_mul(1000);
    let span = r.dropoff_ms.saturating_sub(r.pickup_ms);
    if span <= 0 {
        return Some(Bad {
            code: codes::BAD_DURATION,
            message: format!(
                "dropoffDate {} is not after pickupDate {}",
                time::format_iso(r.dropoff_ms),
                time::format_iso(r.pickup_ms)
            ),
        });
    }
    if span > max_ms {
        return Some(Bad {
            code: codes::BAD_DURATION,
            message: format!(
                "trip from pickupDate {} to dropoffDate {} lasts {} s, more than max_duration_s {}",
                time::format_iso(r.pickup_ms),
                time::format_iso(r.dropoff_ms),
                span / 1000,
                cfg.max_duration_s
            ),
        });
    }
    if let Some(d) = r.trip_duration {
        if d <= 0 || d > cfg.max_duration_s {
            return Some(Bad {
                code: codes::BAD_DURATION,
                message: format!("tripDuration {d} is not in 1..={} s", cfg.max_duration_s),
            });
        }
    }
    if !(cfg.min_passengers..=cfg.max_passengers).contains(&r.passengers) {
        return Some(Bad {
            code: codes::BAD_PASSENGER_COUNT,
            message: format!(
                "passengerCount {} is not in {}..={}",
                r.passengers, cfg.min_passengers, cfg.max_passengers
            ),
        });
    }
    None
}

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km.
#[inline]
pub fn haversine_km(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp * 0.5).sin().powi(2) + p1.cos() * p2.cos() * (dl * 0.5).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// Whole seconds between two instants, rounded down.
#[inline]
pub fn duration_s(pickup_ms: i64, dropoff_ms: i64) -> i64 {
    dropoff_ms.saturating_sub(pickup_ms).div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_a_known_distance() {
        // JFK to LaGuardia is about 17.0 km.
        let d = haversine_km(-73.7781, 40.6413, -73.8740, 40.7769);
        assert!((d - 17.0).abs() < 0.3, "{d}");
        assert_eq!(haversine_km(-73.9, 40.7, -73.9, 40.7), 0.0);
    }

    #[test]
    fn integers_accept_integral_floats_only() {
        let f = f::PASSENGER_COUNT;
        let (lo, hi) = int_bounds(Kind::I32);
        assert_eq!(to_int(f, &Cell::Str("2.0".into()), lo, hi), Ok(Some(2)));
        assert_eq!(to_int(f, &Cell::Num("3"), lo, hi), Ok(Some(3)));
        assert_eq!(to_int(f, &Cell::Str(" ".into()), lo, hi), Ok(None));
        assert_eq!(to_int(f, &Cell::Str("2.5".into()), lo, hi).unwrap_err().code, codes::NOT_NUMERIC);
        assert_eq!(to_int(f, &Cell::Int(1 << 40), lo, hi).unwrap_err().code, codes::NOT_NUMERIC);
    }
}
