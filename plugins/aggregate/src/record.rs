//! One JSON record → (group key, event time, value bytes), or the rejection
//! code and message.

use std::borrow::Cow;

use serde_json::Value;
use taxi_logic::time;

use crate::config::{Plan, TimeFormat};

/// Rejection codes (they land in the dead-letter queue).
pub mod codes {
    pub const MALFORMED: &str = "malformed";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const BAD_TIMESTAMP: &str = "bad_timestamp";
    pub const NOT_NUMERIC: &str = "not_numeric";
}

#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// JSON array of the group values (null for an absent field), e.g. `["a",3]`.
    pub key: Vec<u8>,
    pub time_ms: i64,
    /// One f64 (little-endian) per numeric field of the plan.
    pub value: Vec<u8>,
}

pub type Refusal = (&'static str, String);

fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(doc, |v, p| v.get(p))
        .filter(|v| !v.is_null())
}

fn shown(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut cut = 80;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn missing(path: &[String]) -> Refusal {
    (
        codes::MISSING_FIELD,
        format!("missing field {}", path.join(".")),
    )
}

pub fn extract(plan: &Plan, doc: &[u8]) -> Result<Extracted, Refusal> {
    let v: Value =
        serde_json::from_slice(doc).map_err(|e| (codes::MALFORMED, format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err((
            codes::MALFORMED,
            format!("not a JSON object: {}", shown(&v)),
        ));
    }
    let t = lookup(&v, &plan.time_field).ok_or_else(|| missing(&plan.time_field))?;
    let time_ms = event_time(t, plan.time_format).ok_or_else(|| {
        (
            codes::BAD_TIMESTAMP,
            format!(
                "{} is not a {:?} timestamp: {}",
                plan.time_field.join("."),
                plan.time_format,
                shown(t)
            ),
        )
    })?;
    for p in &plan.required {
        lookup(&v, p).ok_or_else(|| missing(p))?;
    }
    let mut value = Vec::with_capacity(plan.numeric.len() * 8);
    for p in &plan.numeric {
        let x = lookup(&v, p).ok_or_else(|| missing(p))?;
        let n = number(x).ok_or_else(|| {
            (
                codes::NOT_NUMERIC,
                format!("{} is not a number: {}", p.join("."), shown(x)),
            )
        })?;
        value.extend_from_slice(&n.to_le_bytes());
    }
    let group: Vec<Cow<'_, Value>> = plan
        .group_by
        .iter()
        .map(|(_, p)| canonical(lookup(&v, p).unwrap_or(&Value::Null)))
        .collect();
    let key = serde_json::to_vec(&group).map_err(|e| (codes::MALFORMED, e.to_string()))?;
    Ok(Extracted {
        key,
        time_ms,
        value,
    })
}

/// A group value with equal numbers written alike: `1`, `1.0` and `1e0`
/// are one number in JSON (and one group in SQL over it), so a float with
/// an integral value (within ±2^53, where floats hold every integer)
/// groups, and is shown, as that integer; `-0.0` as `0`. Other values are
/// used as they are (borrowed: no copy for the usual strings and integers).
fn canonical(v: &Value) -> Cow<'_, Value> {
    const EXACT: f64 = (1u64 << 53) as f64;
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() <= EXACT => Cow::Owned(Value::from(x as i64)),
            _ => Cow::Borrowed(v),
        },
        // Each element is looked at once (testing first and rebuilding
        // after would look at a level-d element 2^d times).
        Value::Array(a) => {
            let items: Vec<Cow<'_, Value>> = a.iter().map(canonical).collect();
            if items.iter().all(|c| matches!(c, Cow::Borrowed(_))) {
                return Cow::Borrowed(v);
            }
            Cow::Owned(Value::Array(items.into_iter().map(Cow::into_owned).collect()))
        }
        Value::Object(o) => {
            let items: Vec<Cow<'_, Value>> = o.values().map(canonical).collect();
            if items.iter().all(|c| matches!(c, Cow::Borrowed(_))) {
                return Cow::Borrowed(v);
            }
            Cow::Owned(Value::Object(o.keys().cloned().zip(items.into_iter().map(Cow::into_owned)).collect()))
        }
        _ => Cow::Borrowed(v),
    }
}

/// A finite number, from a JSON number or a string holding one (CSV cells).
fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

fn event_time(v: &Value, format: TimeFormat) -> Option<i64> {
    let num = |scale: f64| -> Option<i64> {
        let n = match v {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        time::from_epoch_ms_f64(n * scale)
    };
    match (format, v) {
        (TimeFormat::EpochMs, _) => num(1.0),
        (TimeFormat::EpochS, _) => num(1000.0),
        (TimeFormat::Auto, Value::Number(_)) => num(1.0),
        (TimeFormat::Auto, Value::String(s)) => time::parse_timestamp(s.trim()),
        (TimeFormat::Iso8601, Value::String(s)) if s.len() >= 19 => time::parse_timestamp(s.trim()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AggConfig;

    fn plan(json: &str) -> Plan {
        serde_json::from_str::<AggConfig>(json)
            .unwrap()
            .plan()
            .unwrap()
    }

    #[test]
    fn equal_numbers_make_one_group() {
        let p = plan(r#"{"time_field": "t", "group_by": ["g", "h"], "metrics": [{"op": "count"}]}"#);
        let key = |doc: &str| String::from_utf8(extract(&p, doc.as_bytes()).unwrap().key).unwrap();
        for doc in [
            r#"{"t": 1, "g": 1, "h": "x"}"#,
            r#"{"t": 1, "g": 1.0, "h": "x"}"#,
            r#"{"t": 1, "g": 1e0, "h": "x"}"#,
            r#"{"t": 1, "g": 10e-1, "h": "x"}"#,
        ] {
            assert_eq!(key(doc), r#"[1,"x"]"#, "{doc}");
        }
        assert_eq!(key(r#"{"t": 1, "g": -0.0, "h": [2.0, {"a": 3.0}]}"#), r#"[0,[2,{"a":3}]]"#);
        // Not equal numbers, or not numbers: their own groups, as written.
        assert_eq!(key(r#"{"t": 1, "g": 1.5, "h": "1"}"#), r#"[1.5,"1"]"#);
        assert_eq!(key(r#"{"t": 1, "g": 1e300, "h": 18446744073709551615}"#), r#"[1e+300,18446744073709551615]"#);
    }

    #[test]
    fn key_time_and_values() {
        let p = plan(
            r#"{"time_field": "at.t", "group_by": ["site", "kind"], "metrics": [{"op": "sum", "field": "x"}, {"op": "max", "field": "y"}]}"#,
        );
        let e = extract(
            &p,
            br#"{"at": {"t": "2024-05-01T10:00:00.250Z"}, "site": "s1", "x": 1.5, "y": "2"}"#,
        )
        .unwrap();
        assert_eq!(e.key, br#"["s1",null]"#.to_vec());
        assert_eq!(e.time_ms, 1_714_557_600_250);
        let vals: Vec<f64> = e
            .value
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, [1.5, 2.0]);
        assert_eq!(
            extract(&p, br#"{"at": {"t": 1714557600250}, "x": 1, "y": 2}"#)
                .unwrap()
                .time_ms,
            1_714_557_600_250
        );
    }

    #[test]
    fn refusals_have_codes() {
        let p = plan(
            r#"{"time_field": "t", "metrics": [{"op": "avg", "field": "x"}, {"op": "count", "field": "who"}]}"#,
        );
        for (doc, code) in [
            (&br#"{"x": 1, "who": 1}"#[..], codes::MISSING_FIELD),
            (br#"{"t": null, "x": 1, "who": 1}"#, codes::MISSING_FIELD),
            (
                br#"{"t": "yesterday", "x": 1, "who": 1}"#,
                codes::BAD_TIMESTAMP,
            ),
            (br#"{"t": 5, "who": 1}"#, codes::MISSING_FIELD),
            (br#"{"t": 5, "x": 1}"#, codes::MISSING_FIELD),
            (br#"{"t": 5, "x": "n/a", "who": 1}"#, codes::NOT_NUMERIC),
            (br#"{"t": 5, "x": [1], "who": 1}"#, codes::NOT_NUMERIC),
            (br#"[1]"#, codes::MALFORMED),
            (br#"{"t": "#, codes::MALFORMED),
        ] {
            assert_eq!(
                extract(&p, doc).unwrap_err().0,
                code,
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        assert!(extract(&p, br#"{"t": 5, "x": "2.5", "who": "me"}"#).is_ok());
    }

    #[test]
    fn time_formats() {
        let at = |fmt: &str, t: &str| {
            let p = plan(&format!(
                r#"{{"time_field": "t", "time_format": "{fmt}", "metrics": [{{"op": "count"}}]}}"#
            ));
            extract(&p, format!(r#"{{"t": {t}}}"#).as_bytes())
                .map(|e| e.time_ms)
                .ok()
        };
        assert_eq!(at("epoch_s", "1714557600.5"), Some(1_714_557_600_500));
        assert_eq!(at("epoch_ms", "\"1714557600500\""), Some(1_714_557_600_500));
        assert_eq!(
            at("rfc3339", "\"2024-05-01 10:00:00+02:00\""),
            Some(1_714_550_400_000)
        );
        assert_eq!(at("iso8601", "1714557600500"), None);
        assert_eq!(at("auto", "\"1714557600500\""), Some(1_714_557_600_500));
        assert_eq!(at("epoch_s", "1e300"), None);
    }
}
