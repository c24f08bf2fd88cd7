//! The JSON and columnar forms give the same output and the same rejections
//! for the same input, whether the input is CSV-like strings or typed values.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::*;
use serde_json::{json, Value};
use taxi_logic::{columnar, json, schema, EnrichConfig, ValidateConfig};

fn mixed_rows() -> Vec<Row> {
    let mut rows: Vec<Row> = (0..200).map(good).collect();
    let bad: Vec<Vec<(&str, Option<&str>)>> = vec![
        vec![("pickupDate", None)],
        vec![("id", Some(" "))],
        vec![("pickupLongitude", Some("x"))],
        vec![("passengerCount", Some("2.5"))],
        vec![("dropoffDate", Some("2016-03-14T25:00:00"))],
        vec![("pickupLatitude", Some("39.0"))],
        vec![("passengerCount", Some("0"))],
        vec![("tripDuration", Some("0"))],
        vec![("googleDuration", Some("1e400"))],
        // Unusual but valid from here on.
        vec![("storeAndFwdFlag", Some(""))],
        vec![("pickupDate", Some("2016-03-14T12:00:00-05:00")), ("dropoffDate", Some("2016-03-14 17:30:00"))],
        vec![("pickupDate", Some("2016-03-14 21:00:00.5")), ("dropoffDate", Some("1457990000000"))],
        vec![("vendorId", Some("2.0")), ("gcDistance", Some(" 1e1 "))],
    ];
    for (k, changes) in bad.into_iter().enumerate() {
        let i = 7 + k * 13;
        for (field, v) in changes {
            rows[i] = with(rows[i].clone(), field, v);
        }
    }
    rows
}

#[test]
fn validate_agrees_on_csv_like_input() {
    let cfg = ValidateConfig::default();
    let rows = mixed_rows();
    let (buf, offsets) = json_docs(&rows);
    let j = json::validate(&cfg, &buf, &offsets);
    let (b, origin, rejected) = columnar::validate(&cfg, &utf8_batch(&rows));
    assert_eq!(b.schema(), schema::validated());
    assert_eq!(j.rejected, rejected);
    assert_eq!(j.origin, origin);
    assert_eq!(json_rows(&j), batch_rows(&b));
    // The valid-but-unusual rows passed, normalised.
    assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), (0..9).map(|k| 7 + k * 13).collect::<Vec<_>>());
    let row = |i: u32| json_rows(&j)[origin.iter().position(|&o| o == i).unwrap()].clone();
    assert_eq!(row(7 + 10 * 13)["pickupDate"], "2016-03-14T17:00:00Z");
    assert_eq!(row(7 + 11 * 13)["pickupDate"], "2016-03-14T21:00:00.500Z");
    assert_eq!(row(7 + 11 * 13)["dropoffDate"], "2016-03-14T21:13:20Z");
    assert_eq!(row(7 + 12 * 13)["vendorId"], 2);
    assert_eq!(row(7 + 12 * 13)["gcDistance"], 10.0);
    assert_eq!(row(7 + 9 * 13)["storeAndFwdFlag"], Value::Null);
}

#[test]
fn enrich_agrees_after_validate_and_fills_derived_fields() {
    let rows = mixed_rows();
    let (buf, offsets) = json_docs(&rows);
    let jv = json::validate(&ValidateConfig::default(), &buf, &offsets);
    let ecfg = EnrichConfig { source: "test-feed".into() };
    let je = json::enrich(&ecfg, &jv.buf, &jv.offsets);
    let (bv, _, _) = columnar::validate(&ValidateConfig::default(), &utf8_batch(&rows));
    let (be, origin, rejected) = columnar::enrich(&ecfg, &bv);
    assert!(rejected.is_empty() && je.rejected.is_empty());
    assert_eq!(origin, (0..bv.num_rows() as u32).collect::<Vec<_>>());
    assert_eq!(je.origin, origin);
    assert_eq!(be.schema(), schema::enriched());
    let (jr, br) = (json_rows(&je), batch_rows(&be));
    assert_eq!(jr, br);

    // good(0): gcDistance given (i % 3 == 0) and kept; tripDuration given (i % 4 == 0).
    let r0 = &br[0];
    assert_eq!(r0["gcDistance"], 1.5);
    assert_eq!(r0["tripDuration"], 60);
    assert_eq!((r0["source"].as_str(), r0["year"].as_i64(), r0["month"].as_i64()), (Some("test-feed"), Some(2016), Some(3)));
    // good(1): computed. 2016-03-02 01:01:07 → 01:03:07 is 120 s.
    let r1 = &br[1];
    assert_eq!(r1["tripDuration"], 120);
    assert_eq!((r1["day"].as_i64(), r1["hour"].as_i64()), (Some(2), Some(1)));
    let gc = r1["gcDistance"].as_f64().unwrap();
    let want = taxi_logic::rules::haversine_km(-73.979, 40.751, -73.951, 40.702);
    assert!((gc - want).abs() < 1e-9 && gc > 5.0, "{gc} vs {want}");
}

#[test]
fn typed_input_is_reused_and_gives_the_same_result() {
    let cfg = ValidateConfig::default();
    let rows = mixed_rows();
    let (b1, _, _) = columnar::validate(&cfg, &utf8_batch(&rows));
    // Validating typed output again changes nothing and refuses nothing.
    let (b2, origin, rejected) = columnar::validate(&cfg, &b1);
    assert!(rejected.is_empty());
    assert_eq!(origin.len(), b1.num_rows());
    assert_eq!(b1, b2);
    // Zero-copy: the reused float column shares the input's buffer.
    let p = |b: &RecordBatch| b.column(5).to_data().buffers()[0].as_ptr();
    assert_eq!(p(&b1), p(&b2));
    // The same through the JSON form (its output has numbers and ISO strings).
    let (buf, offsets) = json_docs(&rows);
    let j1 = json::validate(&cfg, &buf, &offsets);
    let j2 = json::validate(&cfg, &j1.buf, &j1.offsets);
    assert_eq!(j1.buf, j2.buf);
}

#[test]
fn json_numbers_and_other_arrow_types_agree() {
    // JSON numbers (epoch-ms timestamps) vs Int64 / Float64 / Timestamp(Second) / Utf8 columns.
    let docs: Vec<Vec<u8>> = [
        json!({"id": 17, "vendorId": 2, "pickupDate": 1457976295000i64, "dropoffDate": 1457977295000i64,
               "passengerCount": 3, "pickupLongitude": -73.9821, "pickupLatitude": 40.7677,
               "dropoffLongitude": -73.9646, "dropoffLatitude": 40.7656, "gcDistance": null, "extra": [1]}),
        json!({"id": 18, "vendorId": 1, "pickupDate": 1457976295000i64, "dropoffDate": 1457976295000i64,
               "passengerCount": 1, "pickupLongitude": -73.9, "pickupLatitude": 40.7,
               "dropoffLongitude": -73.9, "dropoffLatitude": 40.7}),
        json!({"id": 19, "vendorId": 1, "pickupDate": 1457976295000i64, "dropoffDate": 1457976395000i64,
               "passengerCount": 4, "pickupLongitude": -73.9, "pickupLatitude": 40.7,
               "dropoffLongitude": -73.9, "dropoffLatitude": 40.7, "storeAndFwdFlag": "Y", "googleDuration": 7}),
    ]
    .iter()
    .map(|v| serde_json::to_vec(v).unwrap())
    .collect();
    let (buf, offsets) = pack(&docs);

    let f = |name: &str, dt: DataType| Field::new(name, dt, true);
    let schema = Schema::new(vec![
        f("id", DataType::Int64),
        f("vendorId", DataType::Int64),
        f("pickupDate", DataType::Timestamp(TimeUnit::Second, None)),
        f("dropoffDate", DataType::Timestamp(TimeUnit::Second, None)),
        f("passengerCount", DataType::Float64),
        f("pickupLongitude", DataType::Float64),
        f("pickupLatitude", DataType::Float64),
        f("dropoffLongitude", DataType::Float64),
        f("dropoffLatitude", DataType::Float64),
        f("storeAndFwdFlag", DataType::Utf8),
        f("googleDuration", DataType::Int64),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![17, 18, 19])),
        Arc::new(Int64Array::from(vec![2, 1, 1])),
        Arc::new(TimestampSecondArray::from(vec![1457976295, 1457976295, 1457976295])),
        Arc::new(TimestampSecondArray::from(vec![1457977295, 1457976295, 1457976395])),
        Arc::new(Float64Array::from(vec![3.0, 1.0, 4.0])),
        Arc::new(Float64Array::from(vec![-73.9821, -73.9, -73.9])),
        Arc::new(Float64Array::from(vec![40.7677, 40.7, 40.7])),
        Arc::new(Float64Array::from(vec![-73.9646, -73.9, -73.9])),
        Arc::new(Float64Array::from(vec![40.7656, 40.7, 40.7])),
        Arc::new(StringArray::from(vec![None, None, Some("Y")])),
        Arc::new(Int64Array::from(vec![None, None, Some(7)])),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), cols).unwrap();

    let cfg = ValidateConfig::default();
    let j = json::validate(&cfg, &buf, &offsets);
    let (b, origin, rejected) = columnar::validate(&cfg, &batch);
    assert_eq!(j.rejected, rejected);
    assert_eq!(codes(&rejected), vec![(1, "bad_duration")]);
    assert_eq!(origin, vec![0, 2]);
    assert_eq!(json_rows(&j), batch_rows(&b));
    assert_eq!(batch_rows(&b)[0]["id"], "17");
    assert_eq!(batch_rows(&b)[0]["pickupDate"], "2016-03-14T17:24:55Z");

    let e = EnrichConfig::default();
    let (be, _, _) = columnar::enrich(&e, &batch);
    assert_eq!(json_rows(&json::enrich(&e, &buf, &offsets)), batch_rows(&be));
}

#[test]
fn empty_batches() {
    let (out, origin, rejected) = columnar::validate(&ValidateConfig::default(), &utf8_batch(&[]));
    assert_eq!((out.num_rows(), origin.len(), rejected.len()), (0, 0, 0));
    let (out, _, _) = columnar::enrich(&EnrichConfig::default(), &utf8_batch(&[]));
    assert_eq!(out.schema(), schema::enriched());
    let j = json::validate(&ValidateConfig::default(), &[], &[]);
    assert_eq!((j.len(), j.offsets.as_slice()), (0, &[0u32][..]));
}
