//! The columnar form: Arrow record batch in, Arrow record batch out, a column
//! at a time. Input columns may be strings (CSV) or already typed; output is
//! typed per [`crate::schema`]. Rows are looked at individually only to parse
//! strings and to run the range checks; passing rows are gathered once.

pub(crate) mod parse;
mod reader;

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, Int32Array, PrimitiveArray, RecordBatch, StringArray};
use arrow_buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};

use crate::config::{EnrichConfig, ValidateConfig};
use crate::rules::{self, RangeInput, RANK_RANGE};
use crate::{schema, time, Rejection};
use parse::Columns;

/// The validate rules over a batch: (passing rows, typed and normalised;
/// for each output row its input row; the refused rows).
pub fn validate(cfg: &ValidateConfig, batch: &RecordBatch) -> (RecordBatch, Vec<u32>, Vec<Rejection>) {
    let (c, mut rj) = parse::parse(batch);
    let (plon, plat) = (c.pickup_lon.values(), c.pickup_lat.values());
    let (dlon, dlat) = (c.dropoff_lon.values(), c.dropoff_lat.values());
    let (pu, dr, pc) = (c.pickup.values(), c.dropoff.values(), c.passengers.values());
    for i in 0..batch.num_rows() {
        if !rj.is_ok(i) {
            continue;
        }
        let r = RangeInput {
            pickup_lon: plon[i],
            pickup_lat: plat[i],
            dropoff_lon: dlon[i],
            dropoff_lat: dlat[i],
            pickup_ms: pu[i],
            dropoff_ms: dr[i],
            trip_duration: c.trip_duration.is_valid(i).then(|| c.trip_duration.value(i)),
            passengers: pc[i],
        };
        if let Some(bad) = rules::check_ranges(cfg, &r) {
            rj.add(i, RANK_RANGE, || bad);
        }
    }
    let (keep, rejected) = rj.finish();
    let c = select(c, &keep, batch.num_rows());
    let out = RecordBatch::try_new(schema::validated(), base_columns(c, None))
        .expect("columns are built to the validated schema");
    (out, keep, rejected)
}

/// The enrich rules over a batch: add `source`, fill gcDistance and
/// tripDuration where null, add year/month/day/hour of pickupDate (UTC).
/// Rows that do not parse are refused with the validate codes.
pub fn enrich(cfg: &EnrichConfig, batch: &RecordBatch) -> (RecordBatch, Vec<u32>, Vec<Rejection>) {
    let (c, rj) = parse::parse(batch);
    let (keep, rejected) = rj.finish();
    let mut c = select(c, &keep, batch.num_rows());
    let n = keep.len();

    let (plon, plat) = (c.pickup_lon.values(), c.pickup_lat.values());
    let (dlon, dlat) = (c.dropoff_lon.values(), c.dropoff_lat.values());
    let (pu, dr) = (c.pickup.values(), c.dropoff.values());
    c.gc_distance = fill(&c.gc_distance, |i| rules::haversine_km(plon[i], plat[i], dlon[i], dlat[i]));
    c.trip_duration = fill(&c.trip_duration, |i| rules::duration_s(pu[i], dr[i]));

    let (mut year, mut month, mut day, mut hour) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    // Trips arrive roughly in time order: reuse the calendar date while the day repeats.
    let mut last_day = i64::MIN;
    let mut ymd = (0i32, 0i32, 0i32);
    for &ms in pu.iter() {
        let d = ms.div_euclid(86_400_000);
        if d != last_day {
            let (y, m, dd) = time::civil_from_days(d);
            ymd = (y as i32, m as i32, dd as i32);
            last_day = d;
        }
        year.push(ymd.0);
        month.push(ymd.1);
        day.push(ymd.2);
        hour.push((ms.rem_euclid(86_400_000) / 3_600_000) as i32);
    }

    let mut source = StringBuilder::with_capacity(n, n * cfg.source.len());
    for _ in 0..n {
        source.append_value(&cfg.source);
    }
    let extra: [ArrayRef; 5] = [
        Arc::new(source.finish()),
        Arc::new(Int32Array::from(year)),
        Arc::new(Int32Array::from(month)),
        Arc::new(Int32Array::from(day)),
        Arc::new(Int32Array::from(hour)),
    ];
    let out = RecordBatch::try_new(schema::enriched(), base_columns(c, Some(extra)))
        .expect("columns are built to the enriched schema");
    (out, keep, rejected)
}

/// Fills the nulls of a column; reuses it when there are none.
fn fill<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, f: impl Fn(usize) -> T::Native) -> PrimitiveArray<T> {
    if a.null_count() == 0 {
        return PrimitiveArray::new(a.values().clone(), None);
    }
    let v = a.values();
    let filled: Vec<T::Native> = (0..a.len()).map(|i| if a.is_valid(i) { v[i] } else { f(i) }).collect();
    PrimitiveArray::new(ScalarBuffer::from(filled), None)
}

fn base_columns(c: Columns, extra: Option<[ArrayRef; 5]>) -> Vec<ArrayRef> {
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(c.id),
        Arc::new(c.vendor_id),
        Arc::new(c.pickup),
        Arc::new(c.dropoff),
        Arc::new(c.passengers),
        Arc::new(c.pickup_lon),
        Arc::new(c.pickup_lat),
        Arc::new(c.dropoff_lon),
        Arc::new(c.dropoff_lat),
        Arc::new(c.flag),
        Arc::new(c.gc_distance),
        Arc::new(c.trip_duration),
        Arc::new(c.google_distance),
        Arc::new(c.google_duration),
    ];
    cols.extend(extra.into_iter().flatten());
    cols
}

/// Gathers the passing rows; a no-op (no copy) when every row passes.
fn select(c: Columns, keep: &[u32], n: usize) -> Columns {
    if keep.len() == n {
        // Drop null buffers with no nulls (required fields must not carry one
        // with nulls, and after refusals they cannot).
        return Columns {
            id: c.id,
            vendor_id: tidy(c.vendor_id),
            pickup: tidy(c.pickup),
            dropoff: tidy(c.dropoff),
            passengers: tidy(c.passengers),
            pickup_lon: tidy(c.pickup_lon),
            pickup_lat: tidy(c.pickup_lat),
            dropoff_lon: tidy(c.dropoff_lon),
            dropoff_lat: tidy(c.dropoff_lat),
            ..c
        };
    }
    Columns {
        id: take_str(&c.id, keep),
        vendor_id: take(&c.vendor_id, keep),
        pickup: take(&c.pickup, keep),
        dropoff: take(&c.dropoff, keep),
        passengers: take(&c.passengers, keep),
        pickup_lon: take(&c.pickup_lon, keep),
        pickup_lat: take(&c.pickup_lat, keep),
        dropoff_lon: take(&c.dropoff_lon, keep),
        dropoff_lat: take(&c.dropoff_lat, keep),
        flag: take_str(&c.flag, keep),
        gc_distance: take(&c.gc_distance, keep),
        trip_duration: take(&c.trip_duration, keep),
        google_distance: take(&c.google_distance, keep),
        google_duration: take(&c.google_duration, keep),
    }
}

fn tidy<T: ArrowPrimitiveType>(a: PrimitiveArray<T>) -> PrimitiveArray<T> {
    if a.nulls().is_some() && a.null_count() == 0 {
        let dt = a.data_type().clone();
        let (_, values, _) = a.into_parts();
        PrimitiveArray::new(values, None).with_data_type(dt)
    } else {
        a
    }
}

fn take<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, keep: &[u32]) -> PrimitiveArray<T> {
    let v = a.values();
    let values: Vec<T::Native> = keep.iter().map(|&i| v[i as usize]).collect();
    let nulls = a
        .nulls()
        .map(|nb| NullBuffer::new(BooleanBuffer::collect_bool(keep.len(), |j| nb.is_valid(keep[j] as usize))))
        .filter(|nb| nb.null_count() > 0);
    PrimitiveArray::new(ScalarBuffer::from(values), nulls).with_data_type(a.data_type().clone())
}

fn take_str(a: &StringArray, keep: &[u32]) -> StringArray {
    let bytes: usize = keep.iter().map(|&i| a.value_length(i as usize) as usize).sum();
    let mut b = StringBuilder::with_capacity(keep.len(), bytes);
    for &i in keep {
        let i = i as usize;
        if a.is_valid(i) {
            b.append_value(a.value(i));
        } else {
            b.append_null();
        }
    }
    b.finish()
}
