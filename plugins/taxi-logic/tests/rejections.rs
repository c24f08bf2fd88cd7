//! Every rejection code, in both forms, with the same message either way.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use taxi_logic::{codes, columnar, json, EnrichConfig, ValidateConfig};

/// Runs one row through both forms of validate; returns (code, message) after
/// asserting both forms refused it identically.
fn refused(cfg: &ValidateConfig, row: Row) -> (String, String) {
    let rows = vec![good(1), row, good(2)];
    let (buf, offsets) = json_docs(&rows);
    let j = json::validate(cfg, &buf, &offsets);
    let (b, origin, rejected) = columnar::validate(cfg, &utf8_batch(&rows));
    assert_eq!(j.origin, vec![0, 2], "json form: {:?}", j.rejected);
    assert_eq!(origin, vec![0, 2], "columnar form: {rejected:?}");
    assert_eq!(b.num_rows(), 2);
    assert_eq!(j.rejected, rejected, "forms disagree");
    assert_eq!(rejected[0].index, 1);
    (rejected[0].code.clone(), rejected[0].message.clone())
}

fn assert_refused(cfg: &ValidateConfig, row: Row, code: &str, message: &str) {
    let (c, m) = refused(cfg, row);
    assert_eq!((c.as_str(), m.as_str()), (code, message));
}

#[test]
fn missing_field_absent_null_or_blank() {
    let cfg = ValidateConfig::default();
    assert_refused(&cfg, with(good(5), "pickupDate", None), codes::MISSING_FIELD, "missing field pickupDate");
    assert_refused(&cfg, with(good(5), "id", Some("")), codes::MISSING_FIELD, "missing field id");
    assert_refused(&cfg, with(good(5), "passengerCount", Some("  ")), codes::MISSING_FIELD, "missing field passengerCount");
    // An empty optional field is not a problem.
    let (buf, offsets) = json_docs(&[with(good(5), "googleDistance", Some(""))]);
    assert!(json::validate(&cfg, &buf, &offsets).rejected.is_empty());
}

#[test]
fn not_numeric_for_required_and_optional_fields() {
    let cfg = ValidateConfig::default();
    assert_refused(&cfg, with(good(5), "pickupLongitude", Some("abc")), codes::NOT_NUMERIC,
        r#"pickupLongitude is not a number: "abc""#);
    assert_refused(&cfg, with(good(5), "pickupLatitude", Some("NaN")), codes::NOT_NUMERIC,
        r#"pickupLatitude is not a number: "NaN""#);
    assert_refused(&cfg, with(good(5), "passengerCount", Some("1.5")), codes::NOT_NUMERIC,
        r#"passengerCount is not an integer: "1.5""#);
    assert_refused(&cfg, with(good(5), "vendorId", Some("99999999999")), codes::NOT_NUMERIC,
        r#"vendorId is not an integer in range: "99999999999""#);
    assert_refused(&cfg, with(good(5), "gcDistance", Some("far")), codes::NOT_NUMERIC,
        r#"gcDistance is not a number: "far""#);
}

#[test]
fn bad_timestamp_for_impossible_dates_and_text() {
    let cfg = ValidateConfig::default();
    assert_refused(&cfg, with(good(5), "pickupDate", Some("2016-02-30 10:00:00")), codes::BAD_TIMESTAMP,
        r#"pickupDate is not a timestamp: "2016-02-30 10:00:00""#);
    assert_refused(&cfg, with(good(5), "dropoffDate", Some("yesterday")), codes::BAD_TIMESTAMP,
        r#"dropoffDate is not a timestamp: "yesterday""#);
}

#[test]
fn out_of_bounds_per_coordinate_and_configurable() {
    let cfg = ValidateConfig::default();
    assert_refused(&cfg, with(good(5), "pickupLongitude", Some("-80.0")), codes::OUT_OF_BOUNDS,
        "pickupLongitude -80.0 is outside the bounding box [-74.3, -73.6]");
    assert_refused(&cfg, with(good(5), "dropoffLatitude", Some("41.5")), codes::OUT_OF_BOUNDS,
        "dropoffLatitude 41.5 is outside the bounding box [40.45, 41.0]");
    let wide = ValidateConfig::from_json(r#"{"bbox": {"min_lon": -81}}"#).unwrap();
    let (buf, offsets) = json_docs(&[with(good(5), "pickupLongitude", Some("-80.0"))]);
    assert!(json::validate(&wide, &buf, &offsets).rejected.is_empty());
}

#[test]
fn bad_duration_zero_negative_too_long_or_given() {
    let cfg = ValidateConfig::default();
    let at = |p: &str, d: &str| with(with(good(5), "pickupDate", Some(p)), "dropoffDate", Some(d));
    assert_refused(&cfg, at("2016-03-14 17:24:55", "2016-03-14 17:24:55"), codes::BAD_DURATION,
        "dropoffDate 2016-03-14T17:24:55Z is not after pickupDate 2016-03-14T17:24:55Z");
    assert_refused(&cfg, at("2016-03-14 17:24:55", "2016-03-14 17:00:00"), codes::BAD_DURATION,
        "dropoffDate 2016-03-14T17:00:00Z is not after pickupDate 2016-03-14T17:24:55Z");
    assert_refused(&cfg, at("2016-03-14 17:24:55", "2016-03-15 17:24:56"), codes::BAD_DURATION,
        "trip from pickupDate 2016-03-14T17:24:55Z to dropoffDate 2016-03-15T17:24:56Z lasts 86401 s, more than max_duration_s 86400");
    assert_refused(&cfg, with(good(5), "tripDuration", Some("-5")), codes::BAD_DURATION,
        "tripDuration -5 is not in 1..=86400 s");
    let hour = ValidateConfig { max_duration_s: 3600, ..Default::default() };
    let (c, _) = refused(&hour, at("2016-03-14 17:24:55", "2016-03-14 18:24:56"));
    assert_eq!(c, codes::BAD_DURATION);
}

#[test]
fn bad_passenger_count_outside_configured_range() {
    let cfg = ValidateConfig::default();
    assert_refused(&cfg, with(good(5), "passengerCount", Some("0")), codes::BAD_PASSENGER_COUNT,
        "passengerCount 0 is not in 1..=9");
    assert_refused(&cfg, with(good(5), "passengerCount", Some("10")), codes::BAD_PASSENGER_COUNT,
        "passengerCount 10 is not in 1..=9");
    let four = ValidateConfig { max_passengers: 4, ..Default::default() };
    assert_refused(&four, with(good(5), "passengerCount", Some("5")), codes::BAD_PASSENGER_COUNT,
        "passengerCount 5 is not in 1..=4");
}

#[test]
fn first_problem_wins_in_the_same_order_in_both_forms() {
    let cfg = ValidateConfig::default();
    // A later missing field beats an earlier unparseable one.
    let row = with(with(good(5), "passengerCount", Some("abc")), "dropoffLatitude", None);
    assert_refused(&cfg, row, codes::MISSING_FIELD, "missing field dropoffLatitude");
    // Parse problems beat range problems; earlier fields first.
    let row = with(with(good(5), "pickupLongitude", Some("-80")), "googleDuration", Some("x"));
    assert_eq!(refused(&cfg, row).0, codes::NOT_NUMERIC);
    let row = with(with(good(5), "passengerCount", Some("0")), "pickupLatitude", Some("0"));
    assert_eq!(refused(&cfg, row).0, codes::OUT_OF_BOUNDS);
}

#[test]
fn malformed_json_documents() {
    let cfg = ValidateConfig::default();
    let mut docs = vec![b"not json".to_vec(), b"[1, 2]".to_vec(), b"{\"id\": ".to_vec()];
    let (good_buf, _) = json_docs(&[good(1)]);
    let obj: serde_json::Value = serde_json::from_slice(&good_buf).unwrap();
    let mut nested = obj.clone();
    nested["id"] = serde_json::json!({"a": 1});
    docs.push(serde_json::to_vec(&nested).unwrap());
    docs.push(good_buf);
    let (buf, offsets) = pack(&docs);
    for out in [json::validate(&cfg, &buf, &offsets), json::enrich(&EnrichConfig::default(), &buf, &offsets)] {
        assert_eq!(out.origin, vec![4]);
        assert_eq!(codes(&out.rejected), vec![(0, "malformed"), (1, "malformed"), (2, "malformed"), (3, "malformed")]);
        assert!(out.rejected[0].message.starts_with("record is not valid JSON"), "{}", out.rejected[0].message);
        assert_eq!(out.rejected[1].message, "record is not a JSON object");
        assert_eq!(out.rejected[3].message, r#"id is not a string: {"a": 1}"#.replace(": 1", ":1"));
    }
    // Offsets past the buffer refuse the record instead of trapping.
    let out = json::validate(&cfg, b"{}", &[0, 2, 9]);
    assert_eq!(codes(&out.rejected), vec![(0, "missing_field"), (1, "malformed")]);
}

#[test]
fn malformed_column_type_in_columnar_form() {
    let rows = vec![good(1), good(2)];
    let b = utf8_batch(&rows);
    let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    fields[0] = Field::new("id", DataType::Binary, true);
    cols[0] = Arc::new(BinaryArray::from(vec![b"a".as_ref(), b"b".as_ref()]));
    let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let (out, origin, rejected) = columnar::validate(&ValidateConfig::default(), &b);
    assert_eq!(out.num_rows(), 0);
    assert!(origin.is_empty());
    assert_eq!(codes(&rejected), vec![(0, "malformed"), (1, "malformed")]);
    assert_eq!(rejected[0].message, "id is not a string: <Binary value>");
}

#[test]
fn enrich_refuses_what_it_cannot_parse_with_the_same_codes() {
    let cfg = EnrichConfig::default();
    let rows = vec![good(1), with(good(2), "pickupDate", Some("nope")), with(good(3), "vendorId", None), good(4)];
    let (buf, offsets) = json_docs(&rows);
    let j = json::enrich(&cfg, &buf, &offsets);
    let (_, origin, rejected) = columnar::enrich(&cfg, &utf8_batch(&rows));
    assert_eq!(j.origin, vec![0, 3]);
    assert_eq!(origin, vec![0, 3]);
    assert_eq!(j.rejected, rejected);
    assert_eq!(codes(&rejected), vec![(1, "bad_timestamp"), (2, "missing_field")]);
}

#[test]
fn a_missing_required_column_refuses_every_row() {
    let rows = vec![good(1), good(2), good(3)];
    let b = utf8_batch(&rows);
    let keep: Vec<usize> = (0..b.num_columns()).filter(|&i| b.schema().field(i).name() != "dropoffDate").collect();
    let b = b.project(&keep).unwrap();
    let (out, origin, rejected) = columnar::validate(&ValidateConfig::default(), &b);
    assert_eq!((out.num_rows(), origin.len()), (0, 0));
    assert_eq!(codes(&rejected), vec![(0, "missing_field"), (1, "missing_field"), (2, "missing_field")]);
    assert_eq!(rejected[2].message, "missing field dropoffDate");
    // All-null optional columns stay null and cost nothing.
    let (out, _, rejected) = columnar::validate(&ValidateConfig::default(), &utf8_batch(&rows));
    assert!(rejected.is_empty());
    assert_eq!(out.column_by_name("googleDuration").unwrap().null_count(), 3);
}
