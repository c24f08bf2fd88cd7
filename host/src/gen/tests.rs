use std::collections::BTreeMap;

use super::*;

fn opts(rows: u64, seed: u64, bad: f64) -> GenOptions {
    GenOptions { rows, seed, bad_fraction: bad }
}

#[test]
fn rows_are_a_function_of_seed_and_index() {
    let o = opts(1000, 7, 0.2);
    let forward: Vec<Row> = (0..1000).map(|i| row(&o, i)).collect();
    // Regenerating out of order (a resumed source) gives the same rows.
    for i in (0..1000).rev().step_by(37) {
        assert_eq!(row(&o, i), forward[i as usize]);
    }
    let other = opts(1000, 8, 0.2);
    let same = (0..1000).filter(|&i| row(&other, i) == forward[i as usize]).count();
    assert_eq!(same, 0, "another seed must give other rows");
    assert_eq!(forward[42].id(), "id0000042");
}

#[test]
fn good_rows_are_realistic() {
    let o = opts(20_000, 1, 0.0);
    let (mut vendor1, mut one_pax, mut precomputed, mut hours) = (0, 0, 0, [0u32; 24]);
    for i in 0..o.rows {
        let r = row(&o, i);
        assert_eq!(r.expected_code(), None);
        assert!((-74.05..=-73.75).contains(&r.pickup_lon) && (40.60..=40.90).contains(&r.pickup_lat), "{r:?}");
        assert!((-74.05..=-73.75).contains(&r.dropoff_lon) && (40.60..=40.90).contains(&r.dropoff_lat), "{r:?}");
        let d = r.dropoff_s - r.pickup_s;
        assert!((120..=3600).contains(&d), "{d}");
        assert!((row::BASE_EPOCH_S..row::BASE_EPOCH_S + 7 * 86_400).contains(&r.pickup_s));
        assert!((1..=6).contains(&r.passenger_count));
        vendor1 += (r.vendor_id == 1) as u32;
        one_pax += (r.passenger_count == 1) as u32;
        hours[((r.pickup_s % 86_400) / 3600) as usize] += 1;
        if let Some(p) = r.precomputed {
            precomputed += 1;
            assert_eq!(p.trip_duration_s, d);
            let gc = haversine_km(r.pickup_lon, r.pickup_lat, r.dropoff_lon, r.dropoff_lat);
            assert!((p.gc_distance_km - gc).abs() < 0.001, "{p:?} vs {gc}");
            // Average speed stays plausible for a city (0.5–60 km/h).
            let kmh = p.google_distance_km / (d as f64 / 3600.0);
            assert!((0.5..60.0).contains(&kmh), "{kmh}");
        }
    }
    let n = o.rows as f64;
    assert!((0.42..0.52).contains(&(vendor1 as f64 / n)));
    assert!((0.66..0.76).contains(&(one_pax as f64 / n)));
    assert!((0.45..0.55).contains(&(precomputed as f64 / n)));
    assert!(hours.iter().all(|&h| h > 0), "every hour has trips: {hours:?}");
    assert!(hours[19] > 3 * hours[4], "evening busier than 4 am: {hours:?}");
}

#[test]
fn bad_fraction_and_kinds_are_as_asked() {
    let o = opts(50_000, 3, 0.1);
    let mut per_code: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..o.rows {
        if let Some(c) = row(&o, i).expected_code() {
            *per_code.entry(c).or_default() += 1;
        }
    }
    let bad: u64 = per_code.values().sum();
    assert!((4_600..5_400).contains(&bad), "{bad}");
    assert_eq!(per_code.len(), CODES.len(), "{per_code:?}");
    for (code, n) in &per_code {
        assert!((550..900).contains(n), "{code}: {n}");
    }
    assert!((0..1000).all(|i| row(&opts(1, 3, 0.0), i).fault.is_none()));
    assert!((0..1000).all(|i| row(&opts(1, 3, 1.0), i).fault.is_some()));
}

/// The defect is the only problem: structure and values are otherwise valid.
#[test]
fn defects_are_exact_in_both_formats() {
    let o = opts(20_000, 11, 0.5);
    for i in 0..o.rows {
        let r = row(&o, i);
        let code = r.expected_code();
        let mut line = Vec::new();
        r.write_csv(&mut line);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(!text.contains('\n') && !text.contains('"'), "{text}");
        let cells: Vec<&str> = text.split(',').collect();
        assert_eq!(cells.len() == 14, code != Some("malformed"), "{code:?} {text}");

        let mut doc = Vec::new();
        r.write_json(&mut doc);
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&doc);
        let object = parsed.as_ref().ok().and_then(|v| v.as_object());
        assert_eq!(object.is_some(), code != Some("malformed"), "{code:?} {}", String::from_utf8_lossy(&doc));
        let Some(obj) = object else { continue };
        match r.fault {
            Some(Fault::MissingField(f, null)) => {
                assert_eq!(cells[f as usize], "");
                assert_eq!(obj.get(FIELD_NAMES[f as usize]).is_some(), null);
            }
            Some(Fault::NotNumeric(f, t)) | Some(Fault::BadTimestamp(f, t)) => {
                assert_eq!(cells[f as usize], t);
                assert_eq!(obj[FIELD_NAMES[f as usize]], t);
            }
            _ => {
                // Every required cell is present.
                assert!(cells[..9].iter().all(|c| !c.is_empty()), "{text}");
                assert_eq!(obj["id"], r.id());
            }
        }
        let ts_ok = |s: &str| s.len() == 19 && &s[10..11] == " ";
        if !matches!(r.fault, Some(Fault::BadTimestamp(..)) | Some(Fault::MissingField(..))) {
            assert!(ts_ok(cells[2]) && ts_ok(cells[3]), "{text}");
        }
        let coords_ok = (-74.3..=-73.6).contains(&r.pickup_lon)
            && (-74.3..=-73.6).contains(&r.dropoff_lon)
            && (40.45..=41.0).contains(&r.pickup_lat)
            && (40.45..=41.0).contains(&r.dropoff_lat);
        assert_eq!(coords_ok, code != Some("out_of_bounds"), "{r:?}");
        let d = r.dropoff_s - r.pickup_s;
        assert_eq!((1..=86_400).contains(&d), code != Some("bad_duration"), "{r:?}");
        assert_eq!((1..=9).contains(&r.passenger_count), code != Some("bad_passenger_count"), "{r:?}");
        if code.is_some() {
            assert!(r.precomputed.is_none());
        }
    }
}

#[test]
fn files_and_labels_agree() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["trips.csv", "trips.ndjson"] {
        let data = dir.path().join(name);
        let labels = dir.path().join(format!("{name}.labels"));
        let o = opts(5_000, 5, 0.2);
        let report = write_file(&o, &data, Some(&labels)).unwrap();
        assert_eq!(report.rows, 5_000);
        let text = std::fs::read_to_string(&data).unwrap();
        assert_eq!(report.bytes, text.len() as u64);
        let lines: Vec<&str> = text.lines().collect();
        let header = name.ends_with(".csv") as usize;
        assert_eq!(lines.len(), 5_000 + header);
        if header == 1 {
            assert_eq!(lines[0], CSV_HEADER);
        }
        let labels: Vec<serde_json::Value> = std::fs::read_to_string(&labels)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(labels.len(), 5_000);
        let mut bad = 0;
        for (i, l) in labels.iter().enumerate() {
            let r = row(&o, i as u64);
            let n = l["line"].as_u64().unwrap() as usize;
            assert_eq!(n, i + 1 + header);
            assert_eq!(l["id"], r.id());
            assert_eq!(l["code"].as_str(), r.expected_code());
            let mut expect = Vec::new();
            if header == 1 {
                r.write_csv(&mut expect);
            } else {
                r.write_json(&mut expect);
            }
            assert_eq!(lines[n - 1].as_bytes(), &expect[..]);
            bad += l["code"].is_string() as u64;
        }
        assert_eq!(bad, report.bad_total());
    }
    assert!(matches!(write_file(&opts(1, 0, 1.5), &dir.path().join("x.csv"), None), Err(GenError::BadFraction(_))));
}

#[test]
fn the_stream_moves_through_the_week_in_time_order() {
    let o = opts(100_000, 2, 0.0);
    let times: Vec<i64> = (0..o.rows).map(|i| row(&o, i).pickup_s).collect();
    let base = row::BASE_EPOCH_S;
    assert!(times[0] - base < 600, "starts at the week's start");
    assert!(base + 7 * 86_400 - times[times.len() - 1] < 600, "ends at its end");
    // Nearly sorted: a row is never more than ten minutes out of order.
    let mut max_seen = i64::MIN;
    for &t in &times {
        assert!(t > max_seen.saturating_sub(600), "{t} vs {max_seen}");
        max_seen = max_seen.max(t);
    }
    // In a million-row stream a batch of 2048 rows spans minutes (a few
    // partitions), at most a couple of hours in the quiet hours.
    let o = opts(1_000_000, 2, 0.0);
    let span = |start: u64| {
        let t: Vec<i64> = (start..start + 2048).map(|i| row(&o, i).pickup_s).collect();
        t.iter().max().unwrap() - t.iter().min().unwrap()
    };
    assert!(span(500_000) < 30 * 60, "{}", span(500_000));
    assert!((0..1_000_000 - 2048).step_by(10_000).all(|s| span(s) < 3 * 3600));
}

/// The labels are what the real validate rules say, in both of their forms.
#[test]
fn expected_codes_agree_with_the_validate_rules() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field as ArrowField, Schema};

    let cfg = taxi_logic::ValidateConfig::default();
    let o = opts(20_000, 17, 0.3);
    let rows: Vec<Row> = (0..o.rows).map(|i| row(&o, i)).collect();

    // NDJSON through the JSON form: every code, malformed included.
    let mut j = crate::batch::JsonRecords::default();
    let mut doc = Vec::new();
    for r in &rows {
        doc.clear();
        r.write_json(&mut doc);
        j.push(&doc);
    }
    let out = taxi_logic::json::validate(&cfg, &j.buf, &j.offsets);
    let mut got: Vec<Option<String>> = vec![None; rows.len()];
    for rej in &out.rejected {
        got[rej.index as usize] = Some(rej.code.clone());
    }
    for (r, g) in rows.iter().zip(&got) {
        assert_eq!(g.as_deref(), r.expected_code(), "{r:?}");
    }

    // CSV cells as strings through the columnar form; short/long lines are
    // the file source's `malformed` and never reach validate.
    let csv_rows: Vec<&Row> = rows.iter().filter(|r| r.expected_code() != Some("malformed")).collect();
    let mut cols: Vec<Vec<String>> = vec![Vec::new(); 14];
    let mut line = Vec::new();
    for r in &csv_rows {
        line.clear();
        r.write_csv(&mut line);
        for (c, cell) in std::str::from_utf8(&line).unwrap().split(',').enumerate() {
            cols[c].push(cell.to_owned());
        }
    }
    let schema = Arc::new(Schema::new(FIELD_NAMES.map(|n| ArrowField::new(n, DataType::Utf8, true)).to_vec()));
    let arrays: Vec<ArrayRef> = cols.into_iter().map(|c| Arc::new(StringArray::from(c)) as ArrayRef).collect();
    let batch = RecordBatch::try_new(schema, arrays).unwrap();
    let (_, _, rejected) = taxi_logic::columnar::validate(&cfg, &batch);
    let mut got: Vec<Option<String>> = vec![None; csv_rows.len()];
    for rej in &rejected {
        got[rej.index as usize] = Some(rej.code.clone());
    }
    for (r, g) in csv_rows.iter().zip(&got) {
        assert_eq!(g.as_deref(), r.expected_code(), "{r:?}");
    }
}
