//! How text cells become typed values: the one rule shared by the file
//! source (JSON documents and Arrow columns) and `sluice produce` (JSON
//! records for Kinesis), so the same CSV gives a plugin the same values
//! whichever way it arrives.
//!
//! The rule, per cell (surrounding spaces ignored for everything but strings):
//! - empty → missing (left out of a JSON document, null in Arrow);
//! - written as a JSON number: an integer that fits 64 bits → `int64`, any
//!   other number (decimal point or exponent) → `float64`. Integers with a
//!   leading zero (`02134`), a `+` sign, or more digits than 64 bits hold are
//!   not numbers: zip codes and long ids stay exact;
//! - `true` / `false` (any case) → `bool`;
//! - an ISO 8601 date-time (`2016-03-14 17:24:55`, `2016-03-14T17:24:55Z`,
//!   with an offset or without: then it is UTC) → `timestamp` (Arrow
//!   `Timestamp(ms, UTC)`; JSON keeps the text, JSON has no time type);
//! - anything else → `string`.
//!
//! A column's type is the narrowest one that fits every non-empty cell of the
//! rows it is inferred from (`int64` and `float64` make `float64`; any other
//! mix makes `string`; a column with no value is a `string`). After that the
//! type is fixed, and a cell that does not fit it is an error naming the
//! column and the value, never a silently nulled value.

use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

/// A column type, as declared in `columns = [{ name, type }]` or inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int64,
    Float64,
    String,
    Bool,
    Timestamp,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
        }
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::String => DataType::Utf8,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        }
    }

    /// The narrowest type holding values of both.
    pub fn join(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Int64, Float64) | (Float64, Int64) => Float64,
            _ => String,
        }
    }
}

/// One typed cell. Strings and timestamps borrow the cell's text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Missing,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    /// Milliseconds since the epoch (UTC), and the text as written.
    Timestamp(i64, &'a str),
}

/// A cell that does not fit its column's type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column:?}: {value:?} is not {article} {name}", article = article(.ty), name = .ty.name())]
pub struct CellError {
    pub column: String,
    pub value: String,
    pub ty: ColumnType,
}

fn article(ty: &ColumnType) -> &'static str {
    if *ty == ColumnType::Int64 {
        "an"
    } else {
        "a"
    }
}

/// What one cell is on its own (`None` for an empty cell).
pub fn classify(text: &str) -> Option<ColumnType> {
    let t = text.trim_ascii();
    if t.is_empty() {
        return None;
    }
    Some(match number(t) {
        Some(Cell::Int(_)) => ColumnType::Int64,
        Some(_) => ColumnType::Float64,
        None if boolean(t).is_some() => ColumnType::Bool,
        None if looks_like_timestamp(t) && timestamp_ms(t).is_some() => ColumnType::Timestamp,
        None => ColumnType::String,
    })
}

/// The cell as a value of type `ty`, or `None` when it does not fit.
pub fn parse(ty: ColumnType, text: &str) -> Option<Cell<'_>> {
    let t = text.trim_ascii();
    if t.is_empty() {
        return Some(Cell::Missing);
    }
    match ty {
        ColumnType::String => Some(Cell::Str(text)),
        ColumnType::Int64 => match number(t)? {
            c @ Cell::Int(_) => Some(c),
            _ => None,
        },
        ColumnType::Float64 => match number(t)? {
            Cell::Int(i) => Some(Cell::Float(i as f64)),
            c => Some(c),
        },
        ColumnType::Bool => boolean(t).map(Cell::Bool),
        ColumnType::Timestamp => timestamp_ms(t).map(|ms| Cell::Timestamp(ms, t)),
    }
}

/// Like [`parse`], with the error naming the column and the value.
pub fn parse_in<'a>(column: &str, ty: ColumnType, text: &'a str) -> Result<Cell<'a>, CellError> {
    parse(ty, text).ok_or_else(|| CellError { column: column.to_string(), value: text.to_string(), ty })
}

/// Infers column types from sample rows, one [`Inference::observe`] per row.
#[derive(Debug, Clone)]
pub struct Inference {
    seen: Vec<Option<ColumnType>>,
    /// Per column: sampled cells that were not text, and the first text cell
    /// (with its sample row) — to say why a mostly numeric column became text.
    typed: Vec<usize>,
    first_text: Vec<Option<(usize, String)>>,
    rows: usize,
}

/// A column inferred as text although most of its sampled cells were not.
#[derive(Debug, Clone, PartialEq)]
pub struct TextDemotion {
    pub column: usize,
    /// Sampled cells of another type (numbers, booleans, times).
    pub typed: usize,
    /// The first text cell and its row among the sampled rows (0-based).
    pub row: usize,
    pub text: String,
}

impl Inference {
    pub fn new(columns: usize) -> Self {
        Self { seen: vec![None; columns], typed: vec![0; columns], first_text: vec![None; columns], rows: 0 }
    }

    /// One row's cells, in column order (extra cells are ignored).
    pub fn observe<'a>(&mut self, cells: impl IntoIterator<Item = &'a [u8]>) {
        for (i, cell) in cells.into_iter().take(self.seen.len()).enumerate() {
            let ty = match std::str::from_utf8(cell) {
                Ok(text) => classify(text),
                Err(_) => Some(ColumnType::String),
            };
            match ty {
                Some(ColumnType::String) => {
                    if self.first_text[i].is_none() {
                        let text = String::from_utf8_lossy(&cell[..cell.len().min(64)]).into_owned();
                        self.first_text[i] = Some((self.rows, text));
                    }
                }
                Some(_) => self.typed[i] += 1,
                None => {}
            }
            if let Some(ty) = ty {
                let slot = &mut self.seen[i];
                *slot = Some(slot.map_or(ty, |s| s.join(ty)));
            }
        }
        self.rows += 1;
    }

    /// Columns that became text because of a few text cells among many
    /// typed ones (at least 9 in 10): usually a stray `n/a` a user would
    /// rather see in the DLQ than turn a numeric column into strings.
    pub fn demotions(&self) -> Vec<TextDemotion> {
        (0..self.seen.len())
            .filter_map(|i| {
                let (row, text) = self.first_text[i].clone()?;
                let typed = self.typed[i];
                (self.seen[i] == Some(ColumnType::String) && typed >= 9 && typed * 10 >= self.rows * 9)
                    .then_some(TextDemotion { column: i, typed, row, text })
            })
            .collect()
    }

    /// The type of each column; a column without any value is a string.
    pub fn finish(self) -> Vec<ColumnType> {
        self.seen.into_iter().map(|t| t.unwrap_or(ColumnType::String)).collect()
    }
}

/// Append the cell as a JSON value (not for [`Cell::Missing`]).
pub fn write_json(cell: Cell<'_>, out: &mut Vec<u8>) {
    match cell {
        Cell::Missing => out.extend_from_slice(b"null"),
        Cell::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        // `number` only returns finite floats.
        Cell::Float(f) => serde_json::to_writer(&mut *out, &f).expect("vec write"),
        Cell::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Cell::Str(s) | Cell::Timestamp(_, s) => serde_json::to_writer(&mut *out, s).expect("vec write"),
    }
}

/// The cell as a `serde_json::Value` (`None` for a missing cell).
pub fn to_value(cell: Cell<'_>) -> Option<serde_json::Value> {
    use serde_json::Value;
    match cell {
        Cell::Missing => None,
        Cell::Int(i) => Some(Value::from(i)),
        Cell::Float(f) => serde_json::Number::from_f64(f).map(Value::Number),
        Cell::Bool(b) => Some(Value::Bool(b)),
        Cell::Str(s) | Cell::Timestamp(_, s) => Some(Value::String(s.to_string())),
    }
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number(t: &str) -> Option<Cell<'static>> {
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut integer = true;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
        integer = false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
        integer = false;
    }
    if i != b.len() {
        return None;
    }
    if integer {
        // Too many digits for i64: not a number (an id, kept exact as text).
        return t.parse::<i64>().ok().map(Cell::Int);
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Cell::Float)
}

fn boolean(t: &str) -> Option<bool> {
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `YYYY-MM-DD[T ]HH:...`: only these are inferred as timestamps (a bare
/// date or a time stays a string unless declared).
pub fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
}

fn timestamp_ms(t: &str) -> Option<i64> {
    arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, t).ok().map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    #[test]
    fn numbers_are_json_numbers_only() {
        for (text, ty) in [
            ("11", Some(Int64)),
            ("-3", Some(Int64)),
            ("0", Some(Int64)),
            ("11.0", Some(Float64)),
            (" 2.5 ", Some(Float64)),
            ("-0.25", Some(Float64)),
            ("1e3", Some(Float64)),
            ("02134", Some(String)),
            ("+5", Some(String)),
            ("1.", Some(String)),
            (".5", Some(String)),
            ("NaN", Some(String)),
            ("inf", Some(String)),
            ("1e999", Some(String)),
            ("123456789012345678901234", Some(String)),
            ("0x1F", Some(String)),
            ("TRUE", Some(Bool)),
            ("false", Some(Bool)),
            ("N", Some(String)),
            ("2016-03-14 17:24:55", Some(Timestamp)),
            ("2016-03-14T17:24:55.120Z", Some(Timestamp)),
            ("2016-03-14", Some(String)),
            ("2016-13-45 99:00:00", Some(String)),
            ("", None),
            ("  ", None),
        ] {
            assert_eq!(classify(text), ty, "{text:?}");
        }
    }

    #[test]
    fn inference_joins_and_defaults_to_string() {
        let mut inf = Inference::new(6);
        let rows: [[&str; 6]; 3] = [
            ["1", "1", "02134", "", "true", "2016-03-14 17:24:55"],
            ["2", "2.5", "10001", "", "false", "2016-03-14 17:24:56"],
            ["", "3", "60601", "", "", "x"],
        ];
        for r in rows {
            inf.observe(r.iter().map(|c| c.as_bytes()));
        }
        assert_eq!(inf.finish(), vec![Int64, Float64, String, String, Bool, String]);
    }

    #[test]
    fn cells_that_do_not_fit_name_column_and_value() {
        assert_eq!(parse(Float64, "11"), Some(Cell::Float(11.0)));
        assert_eq!(parse(Int64, "11.5"), None);
        assert_eq!(parse(Int64, ""), Some(Cell::Missing));
        assert_eq!(parse(String, " a "), Some(Cell::Str(" a ")));
        assert_eq!(
            parse(Timestamp, "2016-03-14T17:24:55Z"),
            Some(Cell::Timestamp(1_457_976_295_000, "2016-03-14T17:24:55Z"))
        );
        let e = parse_in("arr_delay", Int64, "abc").unwrap_err();
        assert_eq!(e.to_string(), r#"column "arr_delay": "abc" is not an int64"#);
        let e = parse_in("ok", Bool, "yes").unwrap_err();
        assert_eq!(e.to_string(), r#"column "ok": "yes" is not a bool"#);
    }

    #[test]
    fn json_values() {
        let mut out = Vec::new();
        for c in [
            Cell::Int(-3),
            Cell::Float(11.0),
            Cell::Bool(true),
            Cell::Str("a\"b"),
            Cell::Timestamp(0, "1970-01-01T00:00:00Z"),
        ] {
            write_json(c, &mut out);
            out.push(b' ');
        }
        assert_eq!(std::string::String::from_utf8(out).unwrap(), r#"-3 11.0 true "a\"b" "1970-01-01T00:00:00Z" "#);
    }

    #[test]
    fn a_stray_text_cell_in_a_numeric_column_is_reported() {
        let mut inf = Inference::new(3);
        for i in 0..20 {
            let mag = if i == 7 { "n/a".to_string() } else { format!("{}.5", i) };
            let name = format!("p{i}");
            inf.observe([mag.as_bytes(), name.as_bytes(), b"1".as_slice()]);
        }
        let d = inf.demotions();
        assert_eq!(d, vec![TextDemotion { column: 0, typed: 19, row: 7, text: "n/a".into() }]);
        assert_eq!(inf.finish(), vec![String, String, Int64]);
    }
}
