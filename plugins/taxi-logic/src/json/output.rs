//! A typed trip → one canonical JSON document (schema order, ISO timestamps).

use serde::{Serialize, Serializer};

use super::Trip;
use crate::time;

/// The fields enrich adds.
pub(crate) struct Enrichment<'a> {
    pub source: &'a str,
    pub year: i32,
    pub month: i32,
    pub day: i32,
    pub hour: i32,
}

struct Iso(i64);

impl Serialize for Iso {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        let n = time::format_iso_into(self.0, &mut buf);
        // format_iso_into writes ASCII only.
        s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc<'a> {
    id: &'a str,
    vendor_id: i32,
    pickup_date: Iso,
    dropoff_date: Iso,
    passenger_count: i32,
    pickup_longitude: f64,
    pickup_latitude: f64,
    dropoff_longitude: f64,
    dropoff_latitude: f64,
    store_and_fwd_flag: Option<&'a str>,
    gc_distance: Option<f64>,
    trip_duration: Option<i64>,
    google_distance: Option<f64>,
    google_duration: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    year: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    month: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hour: Option<i32>,
}

pub(crate) fn write(buf: &mut Vec<u8>, t: &Trip, extra: Option<Enrichment>) {
    let doc = Doc {
        id: &t.id,
        vendor_id: t.vendor_id,
        pickup_date: Iso(t.pickup_ms),
        dropoff_date: Iso(t.dropoff_ms),
        passenger_count: t.passenger_count,
        pickup_longitude: t.pickup_lon,
        pickup_latitude: t.pickup_lat,
        dropoff_longitude: t.dropoff_lon,
        dropoff_latitude: t.dropoff_lat,
        store_and_fwd_flag: t.store_and_fwd_flag.as_deref(),
        gc_distance: t.gc_distance,
        trip_duration: t.trip_duration,
        google_distance: t.google_distance,
        google_duration: t.google_duration,
        source: extra.as_ref().map(|e| e.source),
        year: extra.as_ref().map(|e| e.year),
        month: extra.as_ref().map(|e| e.month),
        day: extra.as_ref().map(|e| e.day),
        hour: extra.as_ref().map(|e| e.hour),
    };
    // Writing to a Vec cannot fail, and every value is finite (the rules reject NaN/inf).
    let _ = serde_json::to_writer(buf, &doc);
}
