//! The JSON form: one JSON document per record in one buffer with offsets
//! (the WIT `json` batch layout). Records that pass come out as canonical
//! documents: every schema field, in schema order, typed (numbers as numbers,
//! timestamps as ISO 8601 UTC), absent optional fields as `null`, unknown
//! fields dropped.

mod input;
mod output;

use crate::config::{EnrichConfig, ValidateConfig};
use crate::rules::{self, Bad, RangeInput};
use crate::{codes, time, Rejection};

pub(crate) use input::Trip;

/// A JSON-form result: output records (`buf` + n+1 `offsets`), the input
/// index each came from (`origin`), and the refused records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Out {
    pub buf: Vec<u8>,
    pub offsets: Vec<u32>,
    pub origin: Vec<u32>,
    pub rejected: Vec<Rejection>,
}

impl Out {
    fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(records + 1);
        offsets.push(0);
        Self { buf: Vec::with_capacity(bytes), offsets, origin: Vec::with_capacity(records), rejected: Vec::new() }
    }

    fn reject(&mut self, index: usize, bad: Bad) {
        self.rejected.push(Rejection { index: index as u32, code: bad.code.to_owned(), message: bad.message });
    }

    /// Output record i's bytes.
    pub fn record(&self, i: usize) -> &[u8] {
        &self.buf[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn len(&self) -> usize {
        self.origin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origin.is_empty()
    }
}

/// Record i of a batch, or why it cannot be read (bad offsets are the host's
/// bug, but a plugin refuses the record rather than trap).
fn records<'a>(buf: &'a [u8], offsets: &'a [u32]) -> impl Iterator<Item = Result<&'a [u8], Bad>> + 'a {
    offsets.windows(2).map(move |w| {
        let (s, e) = (w[0] as usize, w[1] as usize);
        buf.get(s..e).ok_or_else(|| Bad {
            code: codes::MALFORMED,
            message: format!("record offsets {s}..{e} are outside the batch buffer of {} bytes", buf.len()),
        })
    })
}

/// The validate rules: refuse corrupt and implausible trips, normalise the rest.
pub fn validate(cfg: &ValidateConfig, buf: &[u8], offsets: &[u32]) -> Out {
    let n = offsets.len().saturating_sub(1);
    let mut out = Out::with_capacity(n, buf.len() + n * 64);
    for (i, doc) in records(buf, offsets).enumerate() {
        let checked = doc.and_then(input::parse).and_then(|t| match rules::check_ranges(cfg, &range_input(&t)) {
            Some(bad) => Err(bad),
            None => Ok(t),
        });
        match checked {
            Ok(t) => {
                output::write(&mut out.buf, &t, None);
                out.offsets.push(out.buf.len() as u32);
                out.origin.push(i as u32);
            }
            Err(bad) => out.reject(i, bad),
        }
    }
    out
}

/// The enrich rules: add `source`, fill gcDistance and tripDuration when
/// absent, add year/month/day/hour of pickupDate. Records that do not parse
/// are refused with the validate codes (enrich may run without validate).
pub fn enrich(cfg: &EnrichConfig, buf: &[u8], offsets: &[u32]) -> Out {
    let n = offsets.len().saturating_sub(1);
    let mut out = Out::with_capacity(n, buf.len() + n * 96);
    for (i, doc) in records(buf, offsets).enumerate() {
        match doc.and_then(input::parse) {
            Ok(mut t) => {
                t.gc_distance = t
                    .gc_distance
                    .or_else(|| Some(rules::haversine_km(t.pickup_lon, t.pickup_lat, t.dropoff_lon, t.dropoff_lat)));
                t.trip_duration = t.trip_duration.or_else(|| Some(rules::duration_s(t.pickup_ms, t.dropoff_ms)));
                let c = time::civil(t.pickup_ms);
                let extra = output::Enrichment {
                    source: &cfg.source,
                    year: c.year,
                    month: c.month as i32,
                    day: c.day as i32,
                    hour: c.hour as i32,
                };
                output::write(&mut out.buf, &t, Some(extra));
                out.offsets.push(out.buf.len() as u32);
                out.origin.push(i as u32);
            }
            Err(bad) => out.reject(i, bad),
        }
    }
    out
}

fn range_input(t: &Trip) -> RangeInput {
    RangeInput {
        pickup_lon: t.pickup_lon,
        pickup_lat: t.pickup_lat,
        dropoff_lon: t.dropoff_lon,
        dropoff_lat: t.dropoff_lat,
        pickup_ms: t.pickup_ms,
        dropoff_ms: t.dropoff_ms,
        trip_duration: t.trip_duration,
        passengers: t.passenger_count,
    }
}
