//! Arrow batch of trips → (vendor, pickup time, [`Trip`]) per record.
//!
//! The columns a statistic is made of are read with the same conversions as
//! `validate`/`enrich` (typed columns are used as they are, strings are
//! parsed), so the stage can follow either of them or read CSV directly; a
//! record whose vendor, times, passengers, coordinates, distance or duration
//! does not convert is refused with the same code. Other columns (id, the
//! store-and-forward flag, Google's estimates) are not read. tripDuration and
//! gcDistance are computed the way `enrich` fills them when they are absent.

use arrow_array::{Array, RecordBatch};

use super::codec::Trip;
use crate::columnar::parse::parse_trips;
use crate::rules::{self, Bad, RANK_RANGE};
use crate::{codes, Rejection};

/// One accepted trip: input row, key (vendorId), event time (pickupDate, epoch ms), value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    pub index: u32,
    pub vendor: i32,
    pub pickup_ms: i64,
    pub trip: Trip,
}

const MS_PER_DAY: i64 = 86_400_000;

/// The trips of `batch` in row order, and the refused rows.
pub fn extract(batch: &RecordBatch) -> (Vec<Keyed>, Vec<Rejection>) {
    let (c, mut rj) = parse_trips(batch);
    let n = batch.num_rows();
    let mut out = Vec::with_capacity(n);
    let (vendor, pickup, dropoff) = (c.vendor_id.values(), c.pickup.values(), c.dropoff.values());
    let (plon, plat, dlon, dlat) = (
        c.pickup_lon.values(),
        c.pickup_lat.values(),
        c.dropoff_lon.values(),
        c.dropoff_lat.values(),
    );
    let passengers = c.passengers.values();
    for i in 0..n {
        if !rj.is_ok(i) {
            continue;
        }
        let duration_s = if c.trip_duration.is_valid(i) {
            c.trip_duration.value(i)
        } else {
            rules::duration_s(pickup[i], dropoff[i])
        };
        let distance_km = if c.gc_distance.is_valid(i) {
            c.gc_distance.value(i)
        } else {
            rules::haversine_km(plon[i], plat[i], dlon[i], dlat[i])
        };
        match trip(
            duration_s,
            distance_km,
            plat[i],
            plon[i],
            passengers[i],
            pickup[i],
        ) {
            Ok(trip) => out.push(Keyed {
                index: i as u32,
                vendor: vendor[i],
                pickup_ms: pickup[i],
                trip,
            }),
            Err(bad) => rj.add(i, RANK_RANGE, || bad),
        }
    }
    let (_, rejected) = rj.finish();
    (out, rejected)
}

/// The value of one trip, or why it cannot be summed. Only what would make
/// a statistic meaningless is refused; validate's bounding box and limits
/// are not repeated here.
fn trip(
    duration_s: i64,
    distance_km: f64,
    lat: f64,
    lon: f64,
    passengers: i32,
    pickup_ms: i64,
) -> Result<Trip, Bad> {
    let bad = |code, message: String| Err(Bad { code, message });
    if duration_s < 0 {
        return bad(
            codes::BAD_DURATION,
            format!("tripDuration {duration_s} is negative"),
        );
    }
    if !(distance_km.is_finite() && (0.0..=1e9).contains(&distance_km)) {
        return bad(
            codes::OUT_OF_BOUNDS,
            format!("gcDistance {distance_km:?} is not a distance in km"),
        );
    }
    if !(lat.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && lon.is_finite()
        && (-180.0..=180.0).contains(&lon))
    {
        return bad(
            codes::OUT_OF_BOUNDS,
            format!("pickup location ({lat:?}, {lon:?}) is not a coordinate"),
        );
    }
    if passengers < 0 {
        return bad(
            codes::BAD_PASSENGER_COUNT,
            format!("passengerCount {passengers} is negative"),
        );
    }
    Ok(Trip {
        duration_s,
        distance_mm: round(distance_km * 1e6) as i64,
        lat_e7: round(lat * 1e7) as i32,
        lon_e7: round(lon * 1e7) as i32,
        passengers,
        hour: (pickup_ms.rem_euclid(MS_PER_DAY) / 3_600_000) as u8,
    })
}

/// `f64::round` (half away from zero), exactly, from Wasm's own `trunc`:
/// `round` has no Wasm instruction and goes through a libm call, three per
/// trip. `x - trunc(x)` is exact for every finite x.
#[inline]
fn round(x: f64) -> f64 {
    let t = x.trunc();
    if (x - t).abs() >= 0.5 {
        t + x.signum()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::{columnar, EnrichConfig, ValidateConfig};

    const HEADER: [&str; 14] = [
        "id",
        "vendorId",
        "pickupDate",
        "dropoffDate",
        "passengerCount",
        "pickupLongitude",
        "pickupLatitude",
        "dropoffLongitude",
        "dropoffLatitude",
        "storeAndFwdFlag",
        "gcDistance",
        "tripDuration",
        "googleDistance",
        "googleDuration",
    ];

    fn csv_batch(rows: &[[&str; 14]]) -> RecordBatch {
        let schema = Schema::new(
            HEADER
                .iter()
                .map(|h| Field::new(*h, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        );
        let cols: Vec<ArrayRef> = (0..14)
            .map(|c| {
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|r| (!r[c].is_empty()).then_some(r[c]))
                        .collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    const ROWS: [[&str; 14]; 3] = [
        [
            "a",
            "1",
            "2016-03-14 17:24:55",
            "2016-03-14 17:34:55",
            "2",
            "-73.98",
            "40.75",
            "-73.95",
            "40.77",
            "N",
            "2.5",
            "",
            "",
            "",
        ],
        [
            "b",
            "2",
            "2016-03-14 18:00:01",
            "2016-03-14 18:01:00",
            "1",
            "-73.90",
            "40.70",
            "-73.90",
            "40.70",
            "N",
            "",
            "59",
            "",
            "",
        ],
        [
            "c",
            "x",
            "2016-03-14 18:00:01",
            "2016-03-14 18:01:00",
            "1",
            "-73.90",
            "40.70",
            "-73.90",
            "40.70",
            "N",
            "",
            "",
            "",
            "",
        ],
    ];

    #[test]
    fn reads_csv_strings_and_enriched_columns_alike() {
        let raw = csv_batch(&ROWS);
        let (from_csv, rejected) = extract(&raw);
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            (rejected[0].index, rejected[0].code.as_str()),
            (2, codes::NOT_NUMERIC)
        );
        assert_eq!(from_csv.len(), 2);
        let a = from_csv[0];
        assert_eq!((a.index, a.vendor, a.pickup_ms), (0, 1, 1_457_976_295_000));
        assert_eq!(
            a.trip,
            Trip {
                duration_s: 600,
                distance_mm: 2_500_000,
                lat_e7: 407_500_000,
                lon_e7: -739_800_000,
                passengers: 2,
                hour: 17
            }
        );
        // Row b: no gcDistance → haversine of identical points; tripDuration given.
        assert_eq!(
            (
                from_csv[1].trip.distance_mm,
                from_csv[1].trip.duration_s,
                from_csv[1].trip.hour
            ),
            (0, 59, 18)
        );

        // After validate + enrich (typed Arrow) the same trips give the same values.
        let (v, _, _) = columnar::validate(&ValidateConfig::default(), &raw);
        let (e, origin, _) = columnar::enrich(&EnrichConfig::default(), &v);
        let (from_enriched, rejected) = extract(&e);
        assert!(rejected.is_empty());
        assert_eq!(origin.len(), 2);
        let strip = |k: &[Keyed]| {
            k.iter()
                .map(|k| (k.vendor, k.pickup_ms, k.trip))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&from_enriched), strip(&from_csv));
    }

    #[test]
    fn columns_a_statistic_does_not_use_refuse_nothing() {
        let mut row = ROWS[0];
        row[0] = ""; // id
        row[9] = "?"; // storeAndFwdFlag
        row[12] = "far"; // googleDistance
        let (trips, rejected) = extract(&csv_batch(&[row]));
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(trips.len(), 1);
    }

    #[test]
    fn round_is_f64_round() {
        let tricky = [
            0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994,
            4503599627370495.5, 4503599627370497.0, 1e300, -1e-300, 40.7127753 * 1e7, -73.9865 * 1e7, 2.9999995e6,
        ];
        for x in tricky {
            assert_eq!(round(x).to_bits(), x.round().to_bits(), "{x:e}");
        }
        // And a sweep of values with fractions near one half.
        for i in 0..100_000u32 {
            let x = (i as f64 - 50_000.0) * 0.0001 + 0.00005;
            assert_eq!(round(x * 1e7).to_bits(), (x * 1e7).round().to_bits(), "{x:e}");
        }
    }

    #[test]
    fn refuses_what_would_break_a_statistic() {
        assert_eq!(
            trip(-1, 1.0, 40.0, -73.0, 1, 0).unwrap_err().code,
            codes::BAD_DURATION
        );
        assert_eq!(
            trip(1, f64::NAN, 40.0, -73.0, 1, 0).unwrap_err().code,
            codes::OUT_OF_BOUNDS
        );
        assert_eq!(
            trip(1, 1.0, 91.0, -73.0, 1, 0).unwrap_err().code,
            codes::OUT_OF_BOUNDS
        );
        assert_eq!(
            trip(1, 1.0, 40.0, -73.0, -2, 0).unwrap_err().code,
            codes::BAD_PASSENGER_COUNT
        );
        assert_eq!(trip(1, 1.0, 40.0, -73.0, 1, -1).unwrap().hour, 23);
    }
}
