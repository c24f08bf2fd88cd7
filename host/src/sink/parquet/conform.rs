//! Fitting an incoming batch to the declared schema: columns are looked up by
//! name and cast (safely: a value that does not convert becomes null), and a
//! row is refused when a cast lost one of its values (a fraction cast to an
//! integer counts as lost) or a required column is null or absent.
//! Undeclared columns are dropped, except when the schema was fixed from the
//! data: then a value in a column the table does not have refuses its row
//! (the user declared nothing, so dropping it would be a silent loss). Only
//! refused rows cost per-row work; the rest is whole-column kernels.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::kernels::cmp::neq;
use arrow::compute::{and, cast_with_options, filter, is_not_null, is_null, not, CastOptions};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::batch::Rejection;

pub const SCHEMA_MISMATCH: &str = "schema_mismatch";

pub struct Conformed {
    /// The accepted rows in the declared schema (`None` when none is left).
    pub batch: Option<RecordBatch>,
    /// Refused rows by input index, ascending, one reason each (the first column that failed).
    pub refused: Vec<Rejection>,
}

/// Why rows of one column fail: a mask of the failing rows and how to word it.
enum Failure {
    Lost { column: ArrayRef },
    Null,
    Absent,
    Unconvertible { from: String },
    /// A column the table does not have (schema fixed from the data).
    Undeclared { name: String, from: String },
}

/// `input` fitted to `declared`; `strict`: refuse rows with a value in a
/// column `declared` does not have.
pub fn conform(input: &RecordBatch, declared: &SchemaRef, strict: bool) -> Result<Conformed, ArrowError> {
    let n = input.num_rows();
    let opts = CastOptions { safe: true, ..Default::default() };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(declared.fields().len());
    let mut failures: Vec<(usize, BooleanArray, Failure)> = Vec::new();
    let all = || BooleanArray::from(vec![true; n]);

    for (c, field) in declared.fields().iter().enumerate() {
        let required = !field.is_nullable();
        let Some(col) = input.column_by_name(field.name()) else {
            if required {
                failures.push((c, all(), Failure::Absent));
            }
            columns.push(new_null_array(field.data_type(), n));
            continue;
        };
        let cast = if col.data_type() == field.data_type() {
            col.clone()
        } else {
            match cast_with_options(col, field.data_type(), &opts) {
                Ok(a) => a,
                Err(_) => {
                    failures.push((c, all(), Failure::Unconvertible { from: col.data_type().to_string() }));
                    columns.push(new_null_array(field.data_type(), n));
                    continue;
                }
            }
        };
        // A cast only adds nulls; equal counts mean nothing was lost.
        if cast.null_count() > col.null_count() {
            let lost = and(&is_not_null(col)?, &is_null(&cast)?)?;
            failures.push((c, lost, Failure::Lost { column: col.clone() }));
        }
        // Except float → integer, which truncates (1.5 → 1) without a null.
        if col.data_type().is_floating() && field.data_type().is_integer() {
            let back = cast_with_options(&cast, col.data_type(), &opts)?;
            let truncated = neq(&back, col)?;
            if truncated.true_count() > 0 {
                failures.push((c, truncated, Failure::Lost { column: col.clone() }));
            }
        }
        if required && cast.null_count() > 0 {
            failures.push((c, is_null(&cast)?, Failure::Null));
        }
        columns.push(cast);
    }

    if strict {
        for (f, col) in input.schema().fields().iter().zip(input.columns()) {
            if declared.field_with_name(f.name()).is_err() && col.null_count() < col.len() {
                let from = f.data_type().to_string();
                failures.push((0, is_not_null(col)?, Failure::Undeclared { name: f.name().clone(), from }));
            }
        }
    }

    if failures.is_empty() {
        let batch = (n > 0).then(|| RecordBatch::try_new(declared.clone(), columns)).transpose()?;
        return Ok(Conformed { batch, refused: Vec::new() });
    }

    // Rare path: word one reason per refused row, then filter them out.
    let mut reason: Vec<Option<String>> = vec![None; n];
    for (c, mask, why) in &failures {
        let field = declared.field(*c);
        let fmt = match why {
            Failure::Lost { column } => Some(ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?),
            _ => None,
        };
        for (i, slot) in reason.iter_mut().enumerate() {
            if slot.is_some() || !mask.value(i) || mask.is_null(i) {
                continue;
            }
            *slot = Some(match why {
                Failure::Lost { column } => format!(
                    "column {}: value {} ({}) does not convert to {}",
                    field.name(),
                    fmt.as_ref().map(|f| f.value(i).to_string()).unwrap_or_default(),
                    column.data_type(),
                    field.data_type()
                ),
                Failure::Null => format!("required column {} is null", field.name()),
                Failure::Absent => format!("required column {} is absent", field.name()),
                Failure::Unconvertible { from } => {
                    format!("column {}: type {from} cannot be converted to {}", field.name(), field.data_type())
                }
                Failure::Undeclared { name, from } => format!(
                    "column {name} ({from}) is not in the table's schema, which was fixed from the first batch; declare `columns` to choose the schema"
                ),
            });
        }
    }
    let refused: Vec<Rejection> = reason
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            r.as_ref().map(|m| Rejection { index, code: SCHEMA_MISMATCH.to_owned(), message: m.clone() })
        })
        .collect();
    if refused.len() == n {
        return Ok(Conformed { batch: None, refused });
    }
    let keep = not(&BooleanArray::from(reason.iter().map(|r| r.is_some()).collect::<Vec<_>>()))?;
    let kept: Vec<ArrayRef> = columns.iter().map(|c| filter(c, &keep)).collect::<Result<_, _>>()?;
    let batch = RecordBatch::try_new(Arc::clone(declared), kept)?;
    Ok(Conformed { batch: Some(batch), refused })
}
