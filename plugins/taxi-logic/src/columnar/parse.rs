//! Input columns → typed output-shaped columns (full length), plus the first
//! problem of every refused row. Columns already of the output type are
//! reused without copying (validate → enrich on Arrow costs a scan, not a parse).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, Float64Array, Int32Array, Int64Array, PrimitiveArray, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, TimeUnit};

use super::reader::Reader;
use crate::rules::{self, f, int_bounds, rank_missing, rank_parse, Bad, Cell, FIELDS};
use crate::schema::TIMEZONE;
use crate::Rejection;

/// The first problem (lowest rank) of each row; `None` = row passes so far.
pub(crate) struct Rejects {
    slots: Vec<Option<Box<(u16, Bad)>>>,
}

impl Rejects {
    pub fn new(n: usize) -> Self {
        let mut slots = Vec::with_capacity(n);
        slots.resize_with(n, || None);
        Self { slots }
    }

    #[inline]
    pub fn is_ok(&self, i: usize) -> bool {
        self.slots[i].is_none()
    }

    /// Records a problem unless the row already has one of lower rank; the
    /// message is only built when it is kept.
    #[inline]
    pub fn add(&mut self, i: usize, rank: u16, bad: impl FnOnce() -> Bad) {
        match &self.slots[i] {
            Some(s) if s.0 <= rank => {}
            _ => self.slots[i] = Some(Box::new((rank, bad()))),
        }
    }

    /// Rows that pass (the output's origin) and the refusals, both in row order.
    pub fn finish(self) -> (Vec<u32>, Vec<Rejection>) {
        let mut keep = Vec::with_capacity(self.slots.len());
        let mut rejected = Vec::new();
        for (i, s) in self.slots.into_iter().enumerate() {
            match s {
                None => keep.push(i as u32),
                Some(b) => {
                    let (_, bad) = *b;
                    rejected.push(Rejection { index: i as u32, code: bad.code.to_owned(), message: bad.message });
                }
            }
        }
        (keep, rejected)
    }
}

/// The 14 input fields, typed as in [`crate::schema::validated`], full length.
/// Values at refused rows are unspecified.
pub(crate) struct Columns {
    pub id: StringArray,
    pub vendor_id: Int32Array,
    pub pickup: TimestampMillisecondArray,
    pub dropoff: TimestampMillisecondArray,
    pub passengers: Int32Array,
    pub pickup_lon: Float64Array,
    pub pickup_lat: Float64Array,
    pub dropoff_lon: Float64Array,
    pub dropoff_lat: Float64Array,
    pub flag: StringArray,
    pub gc_distance: Float64Array,
    pub trip_duration: Int64Array,
    pub google_distance: Float64Array,
    pub google_duration: Int64Array,
}

pub(crate) fn parse(batch: &RecordBatch) -> (Columns, Rejects) {
    // The first problem of a row is the one of lowest rank, whatever order
    // the columns are converted in.
    let (t, mut rj) = parse_trips(batch);
    let n = batch.num_rows();
    let col = |i: usize| batch.column_by_name(FIELDS[i].name);
    let cols = Columns {
        id: strings(col(f::ID), f::ID, n, &mut rj),
        vendor_id: t.vendor_id,
        pickup: t.pickup,
        dropoff: t.dropoff,
        passengers: t.passengers,
        pickup_lon: t.pickup_lon,
        pickup_lat: t.pickup_lat,
        dropoff_lon: t.dropoff_lon,
        dropoff_lat: t.dropoff_lat,
        flag: strings(col(f::STORE_AND_FWD), f::STORE_AND_FWD, n, &mut rj),
        gc_distance: t.gc_distance,
        trip_duration: t.trip_duration,
        google_distance: floats(col(f::GOOGLE_DISTANCE), f::GOOGLE_DISTANCE, n, &mut rj),
        google_duration: ints::<Int64Type>(col(f::GOOGLE_DURATION), f::GOOGLE_DURATION, n, &mut rj),
    };
    (cols, rj)
}

/// The 10 fields a trip statistic is made of, typed and checked as in
/// [`parse`]; the others (id, flag, the Google estimates) are not read, so
/// they cannot refuse a row here and cost nothing.
pub(crate) struct TripColumns {
    pub vendor_id: Int32Array,
    pub pickup: TimestampMillisecondArray,
    pub dropoff: TimestampMillisecondArray,
    pub passengers: Int32Array,
    pub pickup_lon: Float64Array,
    pub pickup_lat: Float64Array,
    pub dropoff_lon: Float64Array,
    pub dropoff_lat: Float64Array,
    pub gc_distance: Float64Array,
    pub trip_duration: Int64Array,
}

pub(crate) fn parse_trips(batch: &RecordBatch) -> (TripColumns, Rejects) {
    let n = batch.num_rows();
    let mut rj = Rejects::new(n);
    let col = |i: usize| batch.column_by_name(FIELDS[i].name);
    let cols = TripColumns {
        vendor_id: ints::<Int32Type>(col(f::VENDOR_ID), f::VENDOR_ID, n, &mut rj),
        pickup: timestamps(col(f::PICKUP_DATE), f::PICKUP_DATE, n, &mut rj),
        dropoff: timestamps(col(f::DROPOFF_DATE), f::DROPOFF_DATE, n, &mut rj),
        passengers: ints::<Int32Type>(col(f::PASSENGER_COUNT), f::PASSENGER_COUNT, n, &mut rj),
        pickup_lon: floats(col(f::PICKUP_LON), f::PICKUP_LON, n, &mut rj),
        pickup_lat: floats(col(f::PICKUP_LAT), f::PICKUP_LAT, n, &mut rj),
        dropoff_lon: floats(col(f::DROPOFF_LON), f::DROPOFF_LON, n, &mut rj),
        dropoff_lat: floats(col(f::DROPOFF_LAT), f::DROPOFF_LAT, n, &mut rj),
        gc_distance: floats(col(f::GC_DISTANCE), f::GC_DISTANCE, n, &mut rj),
        trip_duration: ints::<Int64Type>(col(f::TRIP_DURATION), f::TRIP_DURATION, n, &mut rj),
    };
    (cols, rj)
}

/// Nulls in a reused column: required fields refuse those rows.
fn check_nulls(nulls: Option<&NullBuffer>, field: usize, rj: &mut Rejects) {
    if let (true, Some(nb)) = (FIELDS[field].required, nulls) {
        for i in nb.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
            rj.add(i, rank_missing(field), || rules::missing(field));
        }
    }
}

/// The generic path: every cell through the shared conversion, except that
/// Utf8 cells first try `fast`, which must accept only what `conv` would
/// convert to the same value (it skips the `Cell` dispatch for the common case).
fn convert<T: ArrowPrimitiveType>(
    reader: &Reader,
    field: usize,
    n: usize,
    rj: &mut Rejects,
    mut fast: impl FnMut(&str) -> Option<T::Native>,
    conv: impl Fn(&Cell) -> Result<Option<T::Native>, Bad>,
) -> PrimitiveArray<T> {
    let utf8 = match reader {
        Reader::Utf8(a) => Some(*a),
        _ => None,
    };
    // An absent or all-null column (optional CSV fields are often empty) needs no per-row work.
    let all_null = matches!(reader, Reader::Absent) || utf8.is_some_and(|a| a.null_count() == n);
    if all_null && n > 0 {
        if FIELDS[field].required {
            for i in 0..n {
                rj.add(i, rank_missing(field), || rules::missing(field));
            }
        }
        return PrimitiveArray::new_null(n);
    }
    // Rows that end up null, in order; usually none.
    let mut null_rows: Vec<usize> = Vec::new();
    // `map` over a range collects without per-row capacity checks.
    let values: Vec<T::Native> = (0..n)
        .map(|i| {
            let cell = match utf8 {
                Some(a) if a.is_null(i) => Cell::Null,
                Some(a) => match fast(a.value(i)) {
                    Some(v) => return v,
                    None => reader.cell(i),
                },
                None => reader.cell(i),
            };
            match conv(&cell) {
                Ok(Some(v)) => return v,
                Ok(None) => {
                    if FIELDS[field].required {
                        rj.add(i, rank_missing(field), || rules::missing(field));
                    }
                }
                Err(bad) => rj.add(i, rank_parse(field), || bad),
            }
            null_rows.push(i);
            T::Native::default()
        })
        .collect();
    // Straight into bits: a `Vec<bool>` packed afterwards cost more than the
    // parse of a column with a few bad rows.
    let nulls = (!null_rows.is_empty()).then(|| {
        let mut valid = BooleanBufferBuilder::new(n);
        valid.append_n(n, true);
        for i in null_rows {
            valid.set_bit(i, false);
        }
        NullBuffer::new(valid.finish())
    });
    PrimitiveArray::new(ScalarBuffer::from(values), nulls)
}

fn floats(col: Option<&ArrayRef>, field: usize, n: usize, rj: &mut Rejects) -> Float64Array {
    if let Some(a) = col.filter(|a| a.data_type() == &DataType::Float64) {
        let a = a.as_primitive::<Float64Type>().clone();
        check_nulls(a.nulls(), field, rj);
        for (i, &v) in a.values().iter().enumerate() {
            if !v.is_finite() && a.is_valid(i) {
                rj.add(i, rank_parse(field), || rules::to_f64(field, &Cell::Float(v)).unwrap_err());
            }
        }
        return a;
    }
    convert::<Float64Type>(&Reader::new(col), field, n, rj, |s| crate::num::fast_f64(s.as_bytes()), |c| {
        rules::to_f64(field, c)
    })
}

fn ints<T>(col: Option<&ArrayRef>, field: usize, n: usize, rj: &mut Rejects) -> PrimitiveArray<T>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i64>,
{
    if let Some(a) = col.filter(|a| a.data_type() == &T::DATA_TYPE) {
        // Already the output type: every value is in range.
        let a = a.as_primitive::<T>().clone();
        check_nulls(a.nulls(), field, rj);
        return a;
    }
    let (lo, hi) = int_bounds(FIELDS[field].kind);
    let fast = |s: &str| {
        crate::num::fast_i64(s.as_bytes()).filter(|v| (lo..=hi).contains(v)).and_then(|v| T::Native::try_from(v).ok())
    };
    convert::<T>(&Reader::new(col), field, n, rj, fast, |c| {
        // to_int checked the kind's bounds, so the narrowing cannot fail.
        Ok(rules::to_int(field, c, lo, hi)?.and_then(|v| T::Native::try_from(v).ok()))
    })
}

fn timestamps(col: Option<&ArrayRef>, field: usize, n: usize, rj: &mut Rejects) -> TimestampMillisecondArray {
    let ms = DataType::Timestamp(TimeUnit::Millisecond, Some(TIMEZONE.into()));
    if let Some(a) = col.filter(|a| a.data_type() == &ms) {
        let a = a.as_primitive::<TimestampMillisecondType>().clone();
        check_nulls(a.nulls(), field, rj);
        for (i, &v) in a.values().iter().enumerate() {
            if crate::time::in_range(v).is_none() && a.is_valid(i) {
                rj.add(i, rank_parse(field), || rules::to_timestamp(field, &Cell::Int(v)).unwrap_err());
            }
        }
        return a;
    }
    let mut cache = crate::time::DateCache::default();
    convert::<TimestampMillisecondType>(&Reader::new(col), field, n, rj, |s| cache.parse(s), |c| {
        rules::to_timestamp(field, c)
    })
        .with_timezone(TIMEZONE)
}

fn strings(col: Option<&ArrayRef>, field: usize, n: usize, rj: &mut Rejects) -> StringArray {
    if let Some(a) = col.filter(|a| a.data_type() == &DataType::Utf8) {
        let a = a.as_string::<i32>();
        let blank = |i: usize| a.is_valid(i) && a.value(i).trim_ascii().is_empty();
        if FIELDS[field].required {
            for i in 0..n {
                if a.is_null(i) || blank(i) {
                    rj.add(i, rank_missing(field), || rules::missing(field));
                }
            }
            return a.clone();
        }
        // Optional: blank means absent, so rebuild only if there is a blank to turn into null.
        if !(0..n).any(blank) {
            return a.clone();
        }
    }
    let reader = Reader::new(col);
    let mut out = arrow_array::builder::StringBuilder::with_capacity(n, n * 8);
    for i in 0..n {
        match rules::to_str(field, &reader.cell(i)) {
            Ok(Some(s)) => out.append_value(s),
            Ok(None) => {
                if FIELDS[field].required {
                    rj.add(i, rank_missing(field), || rules::missing(field));
                }
                out.append_null();
            }
            Err(bad) => {
                rj.add(i, rank_parse(field), || bad);
                out.append_null();
            }
        }
    }
    out.finish()
}
