//! Read any supported Arrow column one cell at a time as a [`Cell`], so the
//! slow (non-matching type) paths go through exactly the same conversions as
//! the JSON form. The fast paths in `parse` bypass this for columns already
//! of the output type.

use std::borrow::Cow;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, BooleanArray, LargeStringArray, StringArray, StringViewArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, TimeUnit};

use crate::rules::Cell;

pub(crate) enum Reader<'a> {
    Absent,
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    View(&'a StringViewArray),
    /// Integers of any width, and temporal types as epoch milliseconds.
    Int(Cow<'a, [i64]>, Option<&'a NullBuffer>),
    Float(Cow<'a, [f64]>, Option<&'a NullBuffer>),
    Bool(&'a BooleanArray),
    Unsupported(String, Option<&'a NullBuffer>),
}

fn widen<T: ArrowPrimitiveType>(a: &ArrayRef, f: impl Fn(T::Native) -> i64) -> (Cow<'_, [i64]>, Option<&NullBuffer>) {
    let p = a.as_primitive::<T>();
    (Cow::Owned(p.values().iter().map(|&v| f(v)).collect()), p.nulls())
}

impl<'a> Reader<'a> {
    pub fn new(col: Option<&'a ArrayRef>) -> Self {
        let Some(a) = col else { return Reader::Absent };
        let (ints, nulls) = match a.data_type() {
            DataType::Null => return Reader::Absent,
            DataType::Utf8 => return Reader::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => return Reader::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => return Reader::View(a.as_string_view()),
            DataType::Boolean => return Reader::Bool(a.as_boolean()),
            DataType::Float64 => {
                let p = a.as_primitive::<Float64Type>();
                return Reader::Float(Cow::Borrowed(p.values().as_ref()), p.nulls());
            }
            DataType::Float32 => {
                let p = a.as_primitive::<Float32Type>();
                return Reader::Float(Cow::Owned(p.values().iter().map(|&v| v as f64).collect()), p.nulls());
            }
            DataType::Int64 => {
                let p = a.as_primitive::<Int64Type>();
                return Reader::Int(Cow::Borrowed(p.values().as_ref()), p.nulls());
            }
            DataType::Int32 => widen::<Int32Type>(a, |v| v as i64),
            DataType::Int16 => widen::<Int16Type>(a, |v| v as i64),
            DataType::Int8 => widen::<Int8Type>(a, |v| v as i64),
            DataType::UInt32 => widen::<UInt32Type>(a, |v| v as i64),
            DataType::UInt16 => widen::<UInt16Type>(a, |v| v as i64),
            DataType::UInt8 => widen::<UInt8Type>(a, |v| v as i64),
            // Values past i64::MAX saturate, which every range check then refuses.
            DataType::UInt64 => widen::<UInt64Type>(a, |v| i64::try_from(v).unwrap_or(i64::MAX)),
            DataType::Timestamp(TimeUnit::Millisecond, _) => widen::<TimestampMillisecondType>(a, |v| v),
            DataType::Timestamp(TimeUnit::Second, _) => widen::<TimestampSecondType>(a, |v| v.saturating_mul(1000)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                widen::<TimestampMicrosecondType>(a, |v| v.div_euclid(1000))
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                widen::<TimestampNanosecondType>(a, |v| v.div_euclid(1_000_000))
            }
            DataType::Date32 => widen::<Date32Type>(a, |v| v as i64 * 86_400_000),
            DataType::Date64 => widen::<Date64Type>(a, |v| v),
            other => return Reader::Unsupported(format!("<{other} value>"), a.nulls()),
        };
        Reader::Int(ints, nulls)
    }

    #[inline]
    pub fn cell(&self, i: usize) -> Cell<'_> {
        let null = |n: &Option<&NullBuffer>| n.is_some_and(|n| n.is_null(i));
        match self {
            Reader::Absent => Cell::Null,
            Reader::Utf8(a) => if a.is_null(i) { Cell::Null } else { Cell::Str(Cow::Borrowed(a.value(i))) },
            Reader::LargeUtf8(a) => if a.is_null(i) { Cell::Null } else { Cell::Str(Cow::Borrowed(a.value(i))) },
            Reader::View(a) => if a.is_null(i) { Cell::Null } else { Cell::Str(Cow::Borrowed(a.value(i))) },
            Reader::Int(v, n) => if null(n) { Cell::Null } else { Cell::Int(v[i]) },
            Reader::Float(v, n) => if null(n) { Cell::Null } else { Cell::Float(v[i]) },
            Reader::Bool(a) => if a.is_null(i) { Cell::Null } else { Cell::Bool(a.value(i)) },
            Reader::Unsupported(name, n) => if null(n) { Cell::Null } else { Cell::Other(Cow::Borrowed(name)) },
        }
    }
}
