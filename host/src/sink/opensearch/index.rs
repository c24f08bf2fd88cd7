//! The target index of each document: a fixed name, or a pattern with
//! `{field}` / `{field:%Y.%m}` parts taken from the record
//! (`trips-{dropoff_datetime:%Y.%m}` → `trips-2016.01`).

use std::borrow::Cow;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Field {
        path: Vec<String>,
        format: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPattern {
    parts: Vec<Part>,
}

/// Characters OpenSearch refuses in an index name.
const INVALID: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

impl IndexPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("index must not be empty".into());
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("index {s:?}: '{{' without a closing '}}'"))?
                + open;
            let inner = &rest[open + 1..close];
            let (field, format) = match inner.split_once(':') {
                Some((f, fmt)) => (f, Some(fmt.to_string())),
                None => (inner, None),
            };
            if field.is_empty() {
                return Err(format!("index {s:?}: an empty field name in {{}}; write e.g. {{pickup_datetime:%Y.%m}}"));
            }
            if let Some(fmt) = &format {
                if fmt.is_empty() || StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
                    return Err(format!(
                        "index {s:?}: {fmt:?} is not a date format; write e.g. %Y.%m.%d"
                    ));
                }
            }
            parts.push(Part::Field {
                path: field.split('.').map(str::to_string).collect(),
                format,
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        for p in &parts {
            if let Part::Lit(l) = p {
                if l.contains('}') {
                    return Err(format!("index {s:?}: '}}' without an opening '{{'"));
                }
                if l.chars().any(|c| c.is_uppercase() || INVALID.contains(&c)) {
                    return Err(format!("index {s:?}: index names are lowercase, without \\ / * ? \" < > | , # : or spaces"));
                }
            }
        }
        if let Some(Part::Lit(first)) = parts.first() {
            if first.starts_with(['_', '-', '+']) {
                return Err(format!("index {s:?} must not start with '_', '-' or '+'"));
            }
        }
        Ok(Self { parts })
    }

    /// True when the name depends on the record (the record must be parsed).
    pub fn is_dynamic(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field { .. }))
    }

    /// The index of one document; `Err` is the reason it has none (a dead letter).
    pub fn resolve<'a>(&'a self, doc: Option<&Value>) -> Result<Cow<'a, str>, String> {
        if let [Part::Lit(l)] = self.parts.as_slice() {
            return Ok(Cow::Borrowed(l));
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Field { path, format } => {
                    let name = path.join(".");
                    let v = doc
                        .and_then(|d| path.iter().try_fold(d, |v, k| v.get(k)))
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| format!("the index pattern needs field {name:?}, which the record does not have"))?;
                    let piece = match format {
                        Some(f) => date_of(v).ok_or_else(|| format!("field {name:?} ({v}) is not a date (RFC 3339, \"YYYY-MM-DD hh:mm:ss\" or epoch milliseconds)"))?.format(f).to_string(),
                        None => match v {
                            Value::String(s) => s.to_lowercase(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => return Err(format!("field {name:?} is not a string or number")),
                        },
                    };
                    if piece.is_empty() || piece.contains(INVALID) {
                        return Err(format!(
                            "field {name:?} gives {piece:?}, which is not usable in an index name"
                        ));
                    }
                    out.push_str(&piece);
                }
            }
        }
        Ok(Cow::Owned(out))
    }
}

/// A record's date: RFC 3339 (in UTC), a naive date-time or date, or epoch ms.
fn date_of(v: &Value) -> Option<NaiveDateTime> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                return Some(d.naive_utc());
            }
            for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(d) = NaiveDateTime::parse_from_str(s, f) {
                    return Some(d);
                }
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        }
        Value::Number(n) => n
            .as_i64()
            .and_then(DateTime::from_timestamp_millis)
            .map(|d| d.naive_utc()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fixed_and_date_patterns() {
        let p = IndexPattern::parse("trips").unwrap();
        assert!(!p.is_dynamic());
        assert_eq!(p.resolve(None).unwrap(), "trips");
        let p = IndexPattern::parse("trips-{dropoff:%Y.%m}").unwrap();
        assert!(p.is_dynamic());
        for v in [
            json!("2016-01-31 23:59:59"),
            json!("2016-01-31T23:59:59Z"),
            json!("2016-02-01T00:30:00+01:00"),
            json!(1454284799000i64),
        ] {
            assert_eq!(
                p.resolve(Some(&json!({ "dropoff": v }))).unwrap(),
                "trips-2016.01",
                "{v}"
            );
        }
        let p = IndexPattern::parse("by-{vendor}-{w.start:%Y}").unwrap();
        assert_eq!(
            p.resolve(Some(
                &json!({"vendor": "CMT", "w": {"start": "2020-05-01"}})
            ))
            .unwrap(),
            "by-cmt-2020"
        );
    }

    #[test]
    fn records_without_a_usable_field_are_refused_with_a_reason() {
        let p = IndexPattern::parse("t-{d:%Y}").unwrap();
        assert!(p
            .resolve(Some(&json!({})))
            .unwrap_err()
            .contains("does not have"));
        assert!(p
            .resolve(Some(&json!({"d": "yesterday"})))
            .unwrap_err()
            .contains("not a date"));
        let p = IndexPattern::parse("t-{v}").unwrap();
        assert!(p
            .resolve(Some(&json!({"v": "a b"})))
            .unwrap_err()
            .contains("not usable"));
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for bad in ["", "Trips", "a b", "_x", "t-{", "t-{}", "t-}", "t-{d:%Q}"] {
            assert!(IndexPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
