//! The columnar form: Arrow record batch in, Arrow record batch out, a column
//! at a time. Input columns may be strings (CSV) or already typed; output is
//! typed per [`crate::schema`]. Rows are looked at individually only to parse
//! strings and to run the range checks; passing rows are gathered once.

pub(crate) mod parse;
mod reader;

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, Int32Array, PrimitiveArray, RecordBatch, StringArray};
use arrow_buffer::{BooleanBufferBuilder, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

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
    // Refused rows are few: copy the runs of rows between them, not row by row.
    let runs = runs(keep);
    let m = keep.len();
    Columns {
        id: take_str(&c.id, &runs, m),
        vendor_id: take(&c.vendor_id, &runs, m),
        pickup: take(&c.pickup, &runs, m),
        dropoff: take(&c.dropoff, &runs, m),
        passengers: take(&c.passengers, &runs, m),
        pickup_lon: take(&c.pickup_lon, &runs, m),
        pickup_lat: take(&c.pickup_lat, &runs, m),
        dropoff_lon: take(&c.dropoff_lon, &runs, m),
        dropoff_lat: take(&c.dropoff_lat, &runs, m),
        flag: take_str(&c.flag, &runs, m),
        gc_distance: take(&c.gc_distance, &runs, m),
        trip_duration: take(&c.trip_duration, &runs, m),
        google_distance: take(&c.google_distance, &runs, m),
        google_duration: take(&c.google_duration, &runs, m),
    }
}

/// The maximal runs of consecutive rows in `keep` (ascending): (first, length).
fn runs(keep: &[u32]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &i in keep {
        let i = i as usize;
        match runs.last_mut() {
            Some((s, l)) if *s + *l == i => *l += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

/// The validity of `runs` of `nulls` (`None` when nothing in them is null).
fn take_nulls(nulls: Option<&NullBuffer>, runs: &[(usize, usize)], m: usize) -> Option<NullBuffer> {
    let nb = nulls.filter(|nb| nb.null_count() > 0)?;
    let mut b = BooleanBufferBuilder::new(m);
    for &(s, l) in runs {
        b.append_buffer(&nb.inner().slice(s, l));
    }
    Some(NullBuffer::new(b.finish())).filter(|nb| nb.null_count() > 0)
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

fn take<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, runs: &[(usize, usize)], m: usize) -> PrimitiveArray<T> {
    let v = a.values();
    let mut values = Vec::with_capacity(m);
    for &(s, l) in runs {
        values.extend_from_slice(&v[s..s + l]);
    }
    PrimitiveArray::new(ScalarBuffer::from(values), take_nulls(a.nulls(), runs, m)).with_data_type(a.data_type().clone())
}

fn take_str(a: &StringArray, runs: &[(usize, usize)], m: usize) -> StringArray {
    let (offs, data) = (a.value_offsets(), a.value_data());
    let bytes: usize = runs.iter().map(|&(s, l)| (offs[s + l] - offs[s]) as usize).sum();
    let mut offsets = Vec::with_capacity(m + 1);
    offsets.push(0i32);
    let mut values = Vec::with_capacity(bytes);
    for &(s, l) in runs {
        let shift = values.len() as i32 - offs[s];
        values.extend_from_slice(&data[offs[s] as usize..offs[s + l] as usize]);
        offsets.extend(offs[s + 1..=s + l].iter().map(|&o| o + shift));
    }
    let nulls = take_nulls(a.nulls(), runs, m);
    // SAFETY: whole values of a valid string array, end to end, with their
    // offsets moved by the same amount: monotonic, in bounds, and UTF-8 at
    // every boundary. (Checking again is a UTF-8 pass over the column.)
    unsafe { StringArray::new_unchecked(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(values), nulls) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    #[test]
    fn runs_of_kept_rows_copy_values_and_nulls() {
        assert_eq!(runs(&[0, 1, 2, 5, 6, 9]), vec![(0, 3), (5, 2), (9, 1)]);
        assert!(runs(&[]).is_empty());
        // A sliced array (offsets not from 0), nulls inside and outside the runs.
        let s = StringArray::from(vec![Some("zz"), Some("a"), None, Some("ccc"), Some(""), Some("é"), None]).slice(1, 6);
        let keep = [0u32, 2, 3, 4];
        let got = take_str(&s, &runs(&keep), keep.len());
        let want: Vec<Option<&str>> = keep.iter().map(|&i| s.is_valid(i as usize).then(|| s.value(i as usize))).collect();
        assert_eq!(got, StringArray::from(want));
        let n = Int64Array::from(vec![Some(1), None, Some(3), Some(4), None]);
        assert_eq!(take(&n, &runs(&[0, 2, 3]), 3), Int64Array::from(vec![1, 3, 4]));
        assert_eq!(take(&n, &runs(&[1, 4]), 2).null_count(), 2);
        assert!(take(&n, &runs(&[2, 3]), 2).nulls().is_none(), "no nulls kept: no null buffer");
    }
}
