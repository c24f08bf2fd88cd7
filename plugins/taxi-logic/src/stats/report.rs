//! A closed window's statistics → the output document, and the vendor's
//! baseline after it. Field names are a contract with downstream consumers
//! (the OpenSearch index template, dashboards): see plugins/README.md.

use serde::Serialize;

use super::codec::{Baseline, WindowStats};
use super::StatsConfig;

/// The host adds `id`, `window_start` and `window_end`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub vendor_id: String,
    pub trip_count: u64,
    pub passenger_count: i64,
    pub total_duration_s: i64,
    pub avg_duration_s: f64,
    /// Kilometres (great-circle).
    pub avg_distance: f64,
    /// Hour of day (UTC) with the most pickups; the earliest on a tie.
    pub peak_pickup_hour: u8,
    /// The average pickup location, rounded; null below `location_min_trips`.
    pub pickup_location: Option<Location>,
    /// (window average duration − baseline mean) / baseline standard
    /// deviation (at least 1 s), against the baseline *before* this window;
    /// 0.0 while the baseline has fewer than `baseline_min_windows` windows.
    pub anomaly_score: f64,
}

/// A point in the shape an OpenSearch `geo_point` field takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// Smallest standard deviation the score divides by, in seconds: a vendor
/// whose windows all had the same average would otherwise score ±∞.
const MIN_SD_S: f64 = 1.0;

/// The report of one window of `vendor`, and the baseline to keep for the
/// vendor's next window. `None` for a window without trips (never produced
/// by the host, which only finishes groups that received values).
pub fn report(
    cfg: &StatsConfig,
    vendor: &str,
    s: &WindowStats,
    baseline: Baseline,
) -> Option<(Report, Baseline)> {
    if s.trips == 0 {
        return None;
    }
    let n = s.trips as f64;
    let avg_duration_s = s.duration_s as f64 / n;
    let anomaly_score = if baseline.windows >= cfg.baseline_min_windows.max(1) {
        (avg_duration_s - baseline.mean) / baseline.var.sqrt().max(MIN_SD_S)
    } else {
        0.0
    };
    let scale = 10f64.powi(cfg.location_decimals as i32);
    let round = |sum_e7: i64| ((sum_e7 as f64 / n / 1e7) * scale).round() / scale;
    let pickup_location = (s.trips >= cfg.location_min_trips).then(|| Location {
        lat: round(s.lat_e7),
        lon: round(s.lon_e7),
    });
    let r = Report {
        vendor_id: vendor.to_owned(),
        trip_count: s.trips,
        passenger_count: s.passengers,
        total_duration_s: s.duration_s,
        avg_duration_s,
        avg_distance: s.distance_mm as f64 / n / 1e6,
        peak_pickup_hour: s.peak_hour(),
        pickup_location,
        anomaly_score,
    };
    Some((r, baseline.update(avg_duration_s, cfg.baseline_alpha)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Trip;

    fn window(durations: &[i64]) -> WindowStats {
        let mut s = WindowStats::default();
        for (i, &d) in durations.iter().enumerate() {
            s.add(&Trip {
                duration_s: d,
                distance_mm: 2_000_000 + i as i64 * 1000,
                lat_e7: 407_512_345 + i as i32 * 100,
                lon_e7: -739_876_543,
                passengers: 2,
                hour: 9,
            });
        }
        s
    }

    #[test]
    fn reports_sums_averages_and_a_masked_location() {
        let cfg = StatsConfig::default();
        let (r, b) = report(
            &cfg,
            "2",
            &window(&[100, 200, 300, 400, 500]),
            Baseline::default(),
        )
        .unwrap();
        assert_eq!(
            (
                r.vendor_id.as_str(),
                r.trip_count,
                r.passenger_count,
                r.total_duration_s
            ),
            ("2", 5, 10, 1500)
        );
        assert_eq!(
            (r.avg_duration_s, r.avg_distance, r.peak_pickup_hour),
            (300.0, 2.002, 9)
        );
        assert_eq!(
            r.pickup_location,
            Some(Location {
                lat: 40.75,
                lon: -73.99
            })
        );
        assert_eq!(r.anomaly_score, 0.0);
        assert_eq!((b.windows, b.mean), (1, 300.0));
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains(r#""pickup_location":{"lat":40.75,"lon":-73.99}"#),
            "{json}"
        );

        // Four trips are too few to publish where they started.
        let (r, _) = report(
            &cfg,
            "2",
            &window(&[100, 200, 300, 400]),
            Baseline::default(),
        )
        .unwrap();
        assert_eq!(r.pickup_location, None);
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains(r#""pickup_location":null"#));
        assert!(report(&cfg, "2", &WindowStats::default(), Baseline::default()).is_none());
    }

    #[test]
    fn anomaly_score_uses_the_baseline_before_the_window() {
        let cfg = StatsConfig {
            baseline_min_windows: 2,
            baseline_alpha: 0.5,
            ..Default::default()
        };
        let mut b = Baseline::default();
        let mut scores = Vec::new();
        for avg in [300, 300, 300, 340] {
            let (r, next) = report(&cfg, "1", &window(&[avg]), b).unwrap();
            scores.push(r.anomaly_score);
            b = next;
        }
        // Warm-up (fewer than 2 windows), then a steady 300 s, then +40 s
        // against a zero variance: divided by the 1 s floor.
        assert_eq!(scores, vec![0.0, 0.0, 0.0, 40.0]);
        assert_eq!((b.windows, b.mean, b.var), (4, 320.0, 400.0));
    }
}
