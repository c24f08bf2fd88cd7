//! One JSON document → a typed trip, or the first problem with it.
//!
//! Fields are borrowed as raw JSON text and converted by the shared rules, so
//! a JSON number and a CSV cell with the same digits parse identically.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::codes;
use crate::rules::{self, f, int_bounds, Bad, Cell, Kind, FIELDS};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trip<'a> {
    pub id: Cow<'a, str>,
    pub vendor_id: i32,
    pub pickup_ms: i64,
    pub dropoff_ms: i64,
    pub passenger_count: i32,
    pub pickup_lon: f64,
    pub pickup_lat: f64,
    pub dropoff_lon: f64,
    pub dropoff_lat: f64,
    pub store_and_fwd_flag: Option<Cow<'a, str>>,
    pub gc_distance: Option<f64>,
    pub trip_duration: Option<i64>,
    pub google_distance: Option<f64>,
    pub google_duration: Option<i64>,
}

/// Unknown keys are ignored (and dropped from the output).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrip<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    vendor_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pickup_date: Option<&'a RawValue>,
    #[serde(borrow, default)]
    dropoff_date: Option<&'a RawValue>,
    #[serde(borrow, default)]
    passenger_count: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pickup_longitude: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pickup_latitude: Option<&'a RawValue>,
    #[serde(borrow, default)]
    dropoff_longitude: Option<&'a RawValue>,
    #[serde(borrow, default)]
    dropoff_latitude: Option<&'a RawValue>,
    #[serde(borrow, default)]
    store_and_fwd_flag: Option<&'a RawValue>,
    #[serde(borrow, default)]
    gc_distance: Option<&'a RawValue>,
    #[serde(borrow, default)]
    trip_duration: Option<&'a RawValue>,
    #[serde(borrow, default)]
    google_distance: Option<&'a RawValue>,
    #[serde(borrow, default)]
    google_duration: Option<&'a RawValue>,
}

fn cell(raw: Option<&RawValue>) -> Cell<'_> {
    let Some(raw) = raw else { return Cell::Null };
    let text = raw.get();
    match text.as_bytes()[0] {
        b'"' if !text.contains('\\') => Cell::Str(Cow::Borrowed(&text[1..text.len() - 1])),
        b'"' => match serde_json::from_str::<String>(text) {
            Ok(s) => Cell::Str(Cow::Owned(s)),
            Err(_) => Cell::Other(Cow::Borrowed(text)),
        },
        b'n' => Cell::Null,
        b't' => Cell::Bool(true),
        b'f' => Cell::Bool(false),
        b'{' | b'[' => Cell::Other(Cow::Borrowed(text)),
        _ => Cell::Num(text),
    }
}

pub(crate) fn parse(doc: &[u8]) -> Result<Trip<'_>, Bad> {
    // Checked first: serde's derived structs would also accept a JSON array.
    if doc.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let message = match serde_json::from_slice::<serde::de::IgnoredAny>(doc) {
            Ok(_) => "record is not a JSON object".to_owned(),
            Err(e) => format!("record is not valid JSON: {e}"),
        };
        return Err(Bad { code: codes::MALFORMED, message });
    }
    let raw: RawTrip = serde_json::from_slice(doc)
        .map_err(|e| Bad { code: codes::MALFORMED, message: format!("record is not valid JSON: {e}") })?;
    let cells = [
        cell(raw.id),
        cell(raw.vendor_id),
        cell(raw.pickup_date),
        cell(raw.dropoff_date),
        cell(raw.passenger_count),
        cell(raw.pickup_longitude),
        cell(raw.pickup_latitude),
        cell(raw.dropoff_longitude),
        cell(raw.dropoff_latitude),
        cell(raw.store_and_fwd_flag),
        cell(raw.gc_distance),
        cell(raw.trip_duration),
        cell(raw.google_distance),
        cell(raw.google_duration),
    ];
    from_cells(&cells)
}

/// The shared conversion order: every missing required field first, then
/// each field's conversion in schema order.
pub(crate) fn from_cells<'a>(cells: &[Cell<'a>; 14]) -> Result<Trip<'a>, Bad> {
    if let Some(i) = (0..FIELDS.len()).find(|&i| FIELDS[i].required && cells[i].is_missing()) {
        return Err(rules::missing(i));
    }
    let req = |i: usize, v: Option<i64>| v.ok_or_else(|| rules::missing(i));
    let int = |i: usize| {
        let (lo, hi) = int_bounds(FIELDS[i].kind);
        rules::to_int(i, &cells[i], lo, hi)
    };
    let float = |i: usize| rules::to_f64(i, &cells[i]);
    let reqf = |i: usize| float(i)?.ok_or_else(|| rules::missing(i));
    let ts = |i: usize| req(i, rules::to_timestamp(i, &cells[i])?);
    debug_assert_eq!(FIELDS[f::VENDOR_ID].kind, Kind::I32);
    Ok(Trip {
        id: rules::to_str(f::ID, &cells[f::ID])?.ok_or_else(|| rules::missing(f::ID))?,
        vendor_id: req(f::VENDOR_ID, int(f::VENDOR_ID)?)? as i32,
        pickup_ms: ts(f::PICKUP_DATE)?,
        dropoff_ms: ts(f::DROPOFF_DATE)?,
        passenger_count: req(f::PASSENGER_COUNT, int(f::PASSENGER_COUNT)?)? as i32,
        pickup_lon: reqf(f::PICKUP_LON)?,
        pickup_lat: reqf(f::PICKUP_LAT)?,
        dropoff_lon: reqf(f::DROPOFF_LON)?,
        dropoff_lat: reqf(f::DROPOFF_LAT)?,
        store_and_fwd_flag: rules::to_str(f::STORE_AND_FWD, &cells[f::STORE_AND_FWD])?,
        gc_distance: float(f::GC_DISTANCE)?,
        trip_duration: int(f::TRIP_DURATION)?,
        google_distance: float(f::GOOGLE_DISTANCE)?,
        google_duration: int(f::GOOGLE_DURATION)?,
    })
}
