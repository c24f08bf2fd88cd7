//! One synthetic taxi trip: realistic values for good rows, and exactly one
//! deliberate defect for bad rows (so the rejection code is known in advance).

use super::rng::Rng;
use super::GenOptions;

/// 2016-03-14T00:00:00Z: the week the generated trips span.
pub const BASE_EPOCH_S: i64 = 1_457_913_600;
pub const DAYS: u64 = 7;

/// Where good rows' coordinates stay (a box well inside validate's default bbox).
pub const LON_RANGE: (f64, f64) = (-74.05, -73.75);
pub const LAT_RANGE: (f64, f64) = (40.60, 40.90);

/// The 14 input columns, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id = 0,
    VendorId,
    PickupDate,
    DropoffDate,
    PassengerCount,
    PickupLongitude,
    PickupLatitude,
    DropoffLongitude,
    DropoffLatitude,
    StoreAndFwdFlag,
    GcDistance,
    TripDuration,
    GoogleDistance,
    GoogleDuration,
}

pub const FIELD_NAMES: [&str; 14] = [
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

/// The deliberate defect of a bad row. Value-level defects (coordinates,
/// duration, passengers) are already in the row's fields; text-level ones are
/// applied when the row is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// CSV: `0` truncated line, `1` extra fields. NDJSON: `0` truncated
    /// document, `1` not JSON at all, `2` JSON but not an object.
    Malformed(u8),
    /// The field is empty (CSV) or absent / `null` (NDJSON, `null` when the bool is set).
    MissingField(Field, bool),
    NotNumeric(Field, &'static str),
    BadTimestamp(Field, &'static str),
    OutOfBounds,
    BadDuration,
    BadPassengerCount,
}

impl Fault {
    pub fn code(&self) -> &'static str {
        match self {
            Fault::Malformed(_) => "malformed",
            Fault::MissingField(..) => "missing_field",
            Fault::NotNumeric(..) => "not_numeric",
            Fault::BadTimestamp(..) => "bad_timestamp",
            Fault::OutOfBounds => "out_of_bounds",
            Fault::BadDuration => "bad_duration",
            Fault::BadPassengerCount => "bad_passenger_count",
        }
    }
}

/// Every code a generated row can expect, in validate's check order.
pub const CODES: [&str; 7] = [
    "malformed",
    "missing_field",
    "not_numeric",
    "bad_timestamp",
    "out_of_bounds",
    "bad_duration",
    "bad_passenger_count",
];

/// The columns `enrich` computes, present in about half of the good rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Precomputed {
    pub gc_distance_km: f64,
    pub trip_duration_s: i64,
    pub google_distance_km: f64,
    pub google_duration_s: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Row index in the generated stream (the id is derived from it).
    pub index: u64,
    pub vendor_id: i32,
    pub pickup_s: i64,
    pub dropoff_s: i64,
    pub passenger_count: i32,
    pub pickup_lon: f64,
    pub pickup_lat: f64,
    pub dropoff_lon: f64,
    pub dropoff_lat: f64,
    pub store_and_fwd: bool,
    pub precomputed: Option<Precomputed>,
    pub fault: Option<Fault>,
}

impl Row {
    /// `id0000042`: unique per index, seven digits at least.
    pub fn id(&self) -> String {
        format!("id{:07}", self.index)
    }

    /// The rejection code validate (or the file source, for `malformed`)
    /// must give this row; `None` for a good row.
    pub fn expected_code(&self) -> Option<&'static str> {
        self.fault.map(|f| f.code())
    }
}

/// Pickup hotspots: (lon, lat, sigma lon, sigma lat, weight, median trip minutes).
const ZONES: [(f64, f64, f64, f64, u32, f64); 6] = [
    (-73.985, 40.755, 0.018, 0.028, 48, 10.0), // Midtown
    (-74.005, 40.720, 0.012, 0.015, 18, 11.0), // Downtown / Village
    (-73.960, 40.785, 0.012, 0.020, 14, 9.0),  // Upper East / West Side
    (-73.7781, 40.6413, 0.006, 0.005, 6, 35.0), // JFK
    (-73.8740, 40.7769, 0.004, 0.003, 5, 24.0), // LaGuardia
    (-73.950, 40.690, 0.035, 0.030, 9, 13.0),  // Brooklyn / Queens
];

/// Relative trip counts per hour of day (NYC's evening peak, quiet 3–5 am).
const HOUR_WEIGHTS: [u32; 24] = [
    53, 39, 29, 21, 16, 15, 33, 52, 62, 61, 59, 61, 64, 64, 66, 64, 57, 68, 79, 79, 74, 72, 70, 62,
];

const HOURS: usize = DAYS as usize * 24;

/// Trips before each hour of the week, in weight units.
const HOUR_PREFIX: [u32; HOURS + 1] = {
    let mut p = [0u32; HOURS + 1];
    let mut h = 0;
    while h < HOURS {
        p[h + 1] = p[h] + HOUR_WEIGHTS[h % 24];
        h += 1;
    }
    p
};

/// Pickup time of row `i` of `rows`: the stream moves through the week in
/// order (as a live feed does), spending time in each hour in proportion to
/// its traffic, with a minute or so of jitter so arrival order is only
/// nearly sorted. Ordered time also keeps a batch within a few partitions.
fn pickup_time(i: u64, rows: u64, noise: f64) -> i64 {
    let total = HOUR_PREFIX[HOURS] as f64;
    let x = ((i as f64 + 0.5) / rows.max(1) as f64).min(1.0) * total;
    let hour = HOUR_PREFIX.partition_point(|&p| (p as f64) <= x).clamp(1, HOURS) - 1;
    let within = (x - HOUR_PREFIX[hour] as f64) / HOUR_WEIGHTS[hour % 24] as f64;
    let t = hour as f64 * 3600.0 + within * 3600.0 + (noise * 60.0).clamp(-300.0, 300.0);
    BASE_EPOCH_S + (t.round() as i64).clamp(0, HOURS as i64 * 3600 - 1)
}

const PASSENGER_WEIGHTS: [u32; 6] = [710, 144, 41, 19, 53, 33];

const NOT_NUMERIC: [&str; 4] = ["abc", "12.3.4", "n/a", "one"];
/// None of these parse (a bare integer would: validate reads it as epoch ms).
const BAD_TIMESTAMPS: [&str; 5] =
    ["2016-13-45 99:00:00", "yesterday", "2016-03-14T25:61:00", "14/03/2016 10:00", "2016-02-30 10:00:00"];

/// Fields whose absence validate reports (all of them required).
const REQUIRED: [Field; 9] = [
    Field::Id,
    Field::VendorId,
    Field::PickupDate,
    Field::DropoffDate,
    Field::PassengerCount,
    Field::PickupLongitude,
    Field::PickupLatitude,
    Field::DropoffLongitude,
    Field::DropoffLatitude,
];
const NUMERIC: [Field; 6] = [
    Field::VendorId,
    Field::PassengerCount,
    Field::PickupLongitude,
    Field::PickupLatitude,
    Field::DropoffLongitude,
    Field::DropoffLatitude,
];

/// The same distance enrich computes (one definition, in taxi-logic).
pub use taxi_logic::rules::haversine_km;

fn clamp_lon(v: f64) -> f64 {
    v.clamp(LON_RANGE.0, LON_RANGE.1)
}
fn clamp_lat(v: f64) -> f64 {
    v.clamp(LAT_RANGE.0, LAT_RANGE.1)
}
fn inside(lon: f64, lat: f64) -> bool {
    (LON_RANGE.0..=LON_RANGE.1).contains(&lon) && (LAT_RANGE.0..=LAT_RANGE.1).contains(&lat)
}

/// Rounds to `d` decimals, as written; keeps the derived columns consistent
/// with the coordinates a reader actually sees.
fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

/// Row `i` of the stream described by `opts`; the same (seed, i) always gives the same row.
pub fn row(opts: &GenOptions, i: u64) -> Row {
    let mut r = Rng::for_row(opts.seed, i);
    // The first draw decides good/bad so the bad fraction does not depend on anything else.
    let bad = r.f64() < opts.bad_fraction;

    let vendor_id = if r.f64() < 0.47 { 1 } else { 2 };
    let passenger_count = r.weighted(&PASSENGER_WEIGHTS) as i32 + 1;
    let pickup_s = pickup_time(i, opts.rows, r.normal());
    let hour = (pickup_s - BASE_EPOCH_S).rem_euclid(86_400) / 3600;

    let (zlon, zlat, slon, slat, _, median_min) = ZONES[r.weighted(&ZONES.map(|z| z.4))];
    let pickup_lon = round(clamp_lon(zlon + slon * r.normal()), 1e6);
    let pickup_lat = round(clamp_lat(zlat + slat * r.normal()), 1e6);

    // Log-normal trip length around the zone's median, 2–60 minutes.
    let minutes = (median_min.ln() + 0.55 * r.normal()).exp().clamp(2.0, 60.0);
    let duration_s = (minutes * 60.0).round() as i64;
    // Rush hours crawl, nights move; road distance follows from speed and time.
    let base_kmh = match hour {
        0..=5 => 30.0,
        7..=9 | 16..=19 => 15.0,
        _ => 19.0,
    };
    let road_km = base_kmh * r.range(0.75, 1.25) * duration_s as f64 / 3600.0;
    let detour = r.range(1.2, 1.45);
    let gc_target = road_km / detour;
    let bearing = r.range(0.0, std::f64::consts::TAU);
    let dlat = gc_target / 111.2 * bearing.cos();
    let dlon = gc_target / (111.2 * pickup_lat.to_radians().cos()) * bearing.sin();
    // Head the other way when the straight line leaves the city, then clamp.
    let (mut dropoff_lon, mut dropoff_lat) = (pickup_lon + dlon, pickup_lat + dlat);
    if !inside(dropoff_lon, dropoff_lat) {
        dropoff_lon = pickup_lon - dlon;
        dropoff_lat = pickup_lat - dlat;
    }
    let dropoff_lon = round(clamp_lon(dropoff_lon), 1e6);
    let dropoff_lat = round(clamp_lat(dropoff_lat), 1e6);

    let store_and_fwd = r.f64() < 0.006;
    let with_precomputed = r.f64() < 0.5;
    let google_factor = r.range(0.75, 1.05);

    let mut row = Row {
        index: i,
        vendor_id,
        pickup_s,
        dropoff_s: pickup_s + duration_s,
        passenger_count,
        pickup_lon,
        pickup_lat,
        dropoff_lon,
        dropoff_lat,
        store_and_fwd,
        precomputed: None,
        fault: None,
    };
    if bad {
        // Bad rows carry no precomputed columns: a tripDuration would be a
        // second, competing reason to reject a bad_duration row.
        row.fault = Some(corrupt(&mut row, &mut r));
    } else if with_precomputed {
        let gc = haversine_km(pickup_lon, pickup_lat, dropoff_lon, dropoff_lat);
        row.precomputed = Some(Precomputed {
            gc_distance_km: round(gc, 1e3),
            trip_duration_s: duration_s,
            google_distance_km: round(road_km.max(gc * 1.1), 1e3),
            google_duration_s: (duration_s as f64 * google_factor).round() as i64,
        });
    }
    row
}

/// Applies one defect, chosen uniformly among the seven kinds. Every other
/// field stays valid, so no earlier validate check fires instead.
fn corrupt(row: &mut Row, r: &mut Rng) -> Fault {
    match r.below(CODES.len() as u64) {
        0 => Fault::Malformed(r.below(6) as u8),
        1 => Fault::MissingField(REQUIRED[r.below(REQUIRED.len() as u64) as usize], r.f64() < 0.5),
        2 => Fault::NotNumeric(
            NUMERIC[r.below(NUMERIC.len() as u64) as usize],
            NOT_NUMERIC[r.below(NOT_NUMERIC.len() as u64) as usize],
        ),
        3 => Fault::BadTimestamp(
            if r.f64() < 0.5 { Field::PickupDate } else { Field::DropoffDate },
            BAD_TIMESTAMPS[r.below(BAD_TIMESTAMPS.len() as u64) as usize],
        ),
        4 => {
            match r.below(4) {
                // A London trip that leaked into the stream.
                0 => {
                    row.pickup_lon = round(-0.1278 + 0.02 * r.normal(), 1e6);
                    row.pickup_lat = round(51.5074 + 0.02 * r.normal(), 1e6);
                    row.dropoff_lon = round(-0.1278 + 0.02 * r.normal(), 1e6);
                    row.dropoff_lat = round(51.5074 + 0.02 * r.normal(), 1e6);
                }
                // GPS without a fix reports 0,0.
                1 => (row.pickup_lon, row.pickup_lat) = (0.0, 0.0),
                2 => (row.dropoff_lon, row.dropoff_lat) = (0.0, 0.0),
                // Upstate: plausible-looking but outside the box.
                _ => row.dropoff_lat = round(42.2 + 0.1 * r.f64(), 1e6),
            }
            Fault::OutOfBounds
        }
        5 => {
            row.dropoff_s = match r.below(3) {
                0 => row.pickup_s - 60 - r.below(3540) as i64, // dropoff before pickup
                1 => row.pickup_s,                               // zero length
                _ => row.pickup_s + 25 * 3600 + r.below(47 * 3600) as i64, // over a day
            };
            Fault::BadDuration
        }
        _ => {
            row.passenger_count = if r.f64() < 0.5 { 0 } else { 12 };
            Fault::BadPassengerCount
        }
    }
}
