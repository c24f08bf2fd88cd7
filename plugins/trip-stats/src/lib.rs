//! `trip-stats` (aggregate; Arrow in, JSON out): per window and vendor, trip
//! count, passengers, total and average duration, average distance, peak
//! pickup hour, a masked average pickup location and an anomaly score of the
//! window's average duration against the vendor's running baseline.
//!
//! Key: vendorId (decimal text). Event time: pickupDate. Value: a 29-byte
//! trip ([`taxi_logic::stats::Trip`]); state per (window, vendor): integer
//! sums and a sparse hour histogram ([`WindowStats`]). The baseline is kept
//! in the stage's keyed state under `baseline:<vendor>` and updated in
//! `finish`: the host finishes a vendor's windows in order of window end, so
//! the scores are the same on every run over the same input.
//! Config: [`taxi_logic::stats::StatsConfig`]; fields: plugins/README.md.

use sluice_plugin_sdk::{
    error, export_aggregate, info, state, Aggregate, Batch, Config, Extracted, Format, Group,
    Window,
};
use taxi_logic::stats::{self, Baseline, StatsConfig, WindowStats};

struct TripStats {
    cfg: StatsConfig,
}

fn baseline_key(vendor: &[u8]) -> Vec<u8> {
    [b"baseline:".as_slice(), vendor].concat()
}

impl Aggregate for TripStats {
    const TAKES: Format = Format::Arrow;
    /// 1: the first encoding ([`WindowStats::encode`]).
    const STATE_VERSION: u32 = 1;

    fn init(config: Config) -> Result<Self, String> {
        let cfg: StatsConfig = config.parse()?;
        cfg.check()?;
        info!("trip-stats: {cfg:?}");
        Ok(Self { cfg })
    }

    fn extract(&mut self, input: Batch, out: &mut Extracted) -> Result<(), String> {
        let batch = input.into_record_batch()?;
        let (trips, rejected) = stats::extract(&batch);
        *out = Extracted::with_capacity(trips.len(), 2, stats::TRIP_BYTES);
        // Batches hold a handful of vendors: format each key once.
        let mut last: Option<(i32, String)> = None;
        for t in trips {
            if last.as_ref().is_none_or(|(v, _)| *v != t.vendor) {
                last = Some((t.vendor, t.vendor.to_string()));
            }
            let key = last.as_ref().map_or(&[][..], |(_, k)| k.as_bytes());
            out.push(t.index, key, t.pickup_ms, &t.trip.encode());
        }
        for r in rejected {
            out.reject(r.index, r.code, r.message);
        }
        Ok(())
    }

    fn accumulate(&mut self, g: Group<'_>) -> Result<Vec<u8>, String> {
        WindowStats::accumulate(g.state, g.values)
    }

    fn finish(&mut self, window: Window, key: &[u8], state: &[u8]) -> Option<Vec<u8>> {
        let s = match WindowStats::decode(state) {
            Ok(s) => s,
            Err(e) => {
                error!(
                    "window [{}, {}) of vendor {:?}: {e}",
                    window.start_ms,
                    window.end_ms,
                    String::from_utf8_lossy(key)
                );
                return None;
            }
        };
        let bkey = baseline_key(key);
        let baseline = match state::get_many(std::slice::from_ref(&bkey)).pop().flatten() {
            Some(b) => Baseline::decode(&b).unwrap_or_else(|e| {
                error!(
                    "baseline of vendor {:?} is unreadable ({e}); starting it over",
                    String::from_utf8_lossy(key)
                );
                Baseline::default()
            }),
            None => Baseline::default(),
        };
        let (report, next) =
            stats::report(&self.cfg, &String::from_utf8_lossy(key), &s, baseline)?;
        state::put_many(&[(bkey, next.encode().to_vec())]);
        serde_json::to_vec(&report).ok()
    }
}

export_aggregate!(TripStats);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use sluice_plugin_sdk::Blobs;

    fn batch(rows: &[(&str, &str, &str)]) -> Batch {
        // vendorId, pickupDate, dropoffDate; the rest fixed.
        let n = rows.len();
        let col = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from((0..n).map(|i| f(i)).collect::<Vec<_>>()))
        };
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("id", col(&|i| format!("t{i}"))),
            ("vendorId", col(&|i| rows[i].0.to_owned())),
            ("pickupDate", col(&|i| rows[i].1.to_owned())),
            ("dropoffDate", col(&|i| rows[i].2.to_owned())),
            ("passengerCount", col(&|_| "2".into())),
            ("pickupLongitude", col(&|_| "-73.98".into())),
            ("pickupLatitude", col(&|_| "40.75".into())),
            ("dropoffLongitude", col(&|_| "-73.95".into())),
            ("dropoffLatitude", col(&|_| "40.77".into())),
            ("gcDistance", col(&|_| "1.5".into())),
        ];
        let schema = Schema::new(
            cols.iter()
                .map(|(n, _)| Field::new(*n, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        );
        let rb = RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, c)| c).collect())
            .unwrap();
        Batch::from_record_batch(&rb).unwrap()
    }

    fn doc(bytes: Option<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(&bytes.expect("a report")).unwrap()
    }

    #[test]
    fn extract_accumulate_finish_with_a_baseline_in_state() {
        let cfg = r#"{"baseline_min_windows": 1, "location_min_trips": 2}"#;
        let mut p = TripStats::init(Config::new(cfg.into())).unwrap();
        let input = batch(&[
            ("1", "2016-03-14 17:00:05", "2016-03-14 17:10:05"),
            ("2", "2016-03-14 17:00:06", "2016-03-14 17:05:06"),
            ("1", "2016-03-14 17:00:07", "2016-03-14 17:20:07"),
            ("1", "not a date", "2016-03-14 17:20:07"),
        ]);
        let mut x = Extracted::new();
        p.extract(input, &mut x).unwrap();
        assert_eq!(
            x.rejected()
                .iter()
                .map(|r| (r.index, r.code.as_str()))
                .collect::<Vec<_>>(),
            [(3, "bad_timestamp")]
        );
        let recs: Vec<_> = x.records().collect();
        let keys: Vec<_> = recs
            .iter()
            .map(|k| (k.index, k.key.to_vec(), k.event_time_ms))
            .collect();
        assert_eq!(keys[0], (0, b"1".to_vec(), 1_457_974_805_000));
        assert_eq!(keys[1].1, b"2".to_vec());

        // The host's grouping for one window: vendor 1 gets rows 0 and 2, in two calls.
        let w = Window {
            start_ms: 1_457_974_800_000,
            end_ms: 1_457_974_860_000,
        };
        let group = |state, values| Group {
            window: w,
            key: b"1",
            state,
            values,
        };
        let v0: Blobs = [recs[0].value].into_iter().collect();
        let v2: Blobs = [recs[2].value].into_iter().collect();
        let s1 = p.accumulate(group(None, v0.iter())).unwrap();
        let s2 = p.accumulate(group(Some(&s1), v2.iter())).unwrap();
        let r = doc(p.finish(w, b"1", &s2));
        assert_eq!(r["vendor_id"], "1");
        assert_eq!(
            (r["trip_count"].as_u64(), r["passenger_count"].as_u64()),
            (Some(2), Some(4))
        );
        assert_eq!(
            (r["total_duration_s"].as_u64(), r["avg_duration_s"].as_f64()),
            (Some(1800), Some(900.0))
        );
        assert_eq!(
            (r["avg_distance"].as_f64(), r["peak_pickup_hour"].as_u64()),
            (Some(1.5), Some(17))
        );
        assert_eq!(
            r["pickup_location"],
            serde_json::json!({"lat": 40.75, "lon": -73.98})
        );
        assert_eq!(r["anomaly_score"].as_f64(), Some(0.0));

        // The next window of vendor 1 is scored against the first (baseline
        // from keyed state): 30 s more than the baseline, variance 0 → floor 1 s.
        let w2 = Window {
            start_ms: w.end_ms,
            end_ms: w.end_ms + 60_000,
        };
        let mut t = taxi_logic::stats::Trip::decode(recs[0].value).unwrap();
        t.duration_s = 930;
        let v: Blobs = [t.encode()].into_iter().collect();
        let s = p.accumulate(Group {
            window: w2,
            key: b"1",
            state: None,
            values: v.iter(),
        });
        let r = doc(p.finish(w2, b"1", &s.unwrap()));
        assert_eq!(r["anomaly_score"].as_f64(), Some(30.0));
        assert_eq!(
            r["pickup_location"],
            serde_json::Value::Null,
            "one trip: no location"
        );

        assert!(
            p.finish(w, b"1", &[1, 2, 3]).is_none(),
            "undecodable state"
        );
        assert!(TripStats::init(Config::new(r#"{"location_min_trips": 1}"#.into())).is_err());
    }
}
