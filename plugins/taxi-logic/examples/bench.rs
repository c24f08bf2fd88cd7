//! Native throughput of the rules on 100k CSV-like rows:
//! `cargo bench-native` from plugins/ (release, host target).
//! Prints records/s for the columnar and JSON forms of validate + enrich.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use taxi_logic::{columnar, json, EnrichConfig, ValidateConfig};

const HEADER: [&str; 14] = [
    "id", "vendorId", "pickupDate", "dropoffDate", "passengerCount", "pickupLongitude", "pickupLatitude",
    "dropoffLongitude", "dropoffLatitude", "storeAndFwdFlag", "gcDistance", "tripDuration", "googleDistance",
    "googleDuration",
];

fn row(i: usize) -> [String; 14] {
    let h = (i * 2_654_435_761) % 1_000_003; // cheap scatter so values vary
    [
        format!("id{i:07}"),
        format!("{}", 1 + h % 2),
        format!("2016-03-{:02} {:02}:{:02}:{:02}", 1 + h % 28, h % 24, h % 50, h % 60),
        format!("2016-03-{:02} {:02}:{:02}:{:02}", 1 + h % 28, h % 24, h % 50 + 1 + h % 9, h % 60),
        format!("{}", if h.is_multiple_of(97) { 0 } else { 1 + h % 6 }),
        format!("{:.6}", -73.99 + (h % 1000) as f64 * 0.0002),
        format!("{:.6}", 40.70 + (h % 777) as f64 * 0.0002),
        format!("{:.6}", -73.95 - (h % 555) as f64 * 0.0002),
        format!("{:.6}", 40.72 + (h % 333) as f64 * 0.0003),
        if h.is_multiple_of(10) { "Y" } else { "N" }.to_owned(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]
}

fn main() {
    let n = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000usize);
    let rows: Vec<[String; 14]> = (0..n).map(row).collect();
    let fields: Vec<Field> = HEADER.iter().map(|h| Field::new(*h, DataType::Utf8, true)).collect();
    let cols: Vec<ArrayRef> = (0..14)
        .map(|c| {
            let v: StringArray = rows.iter().map(|r| Some(r[c].as_str()).filter(|s| !s.is_empty())).collect();
            Arc::new(v) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    let (vcfg, ecfg) = (ValidateConfig::default(), EnrichConfig::default());

    let mut best = f64::MAX;
    let mut kept = 0;
    let rounds = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(7);
    for _ in 0..rounds {
        let t = Instant::now();
        // Arrow path in the pipeline: CSV columns → validate → enrich, in batches of 8192.
        let mut total = 0;
        for off in (0..n).step_by(8192) {
            let b = batch.slice(off, 8192.min(n - off));
            let (v, _, _) = columnar::validate(&vcfg, &b);
            let (e, _, _) = columnar::enrich(&ecfg, &v);
            total += e.num_rows();
        }
        best = best.min(t.elapsed().as_secs_f64());
        kept = total;
    }
    println!("columnar validate+enrich: {n} rows ({kept} kept) in {:.1} ms = {:.0} rec/s", best * 1e3, n as f64 / best);

    if std::env::var("COLUMNAR_ONLY").is_ok() {
        return;
    }
    let mut buf = Vec::new();
    let mut offsets = vec![0u32];
    for r in &rows {
        let m: serde_json::Map<String, serde_json::Value> =
            HEADER.iter().zip(r).map(|(h, v)| (h.to_string(), serde_json::Value::from(v.as_str()))).collect();
        serde_json::to_writer(&mut buf, &m).unwrap();
        offsets.push(buf.len() as u32);
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let v = json::validate(&vcfg, &buf, &offsets);
        let e = json::enrich(&ecfg, &v.buf, &v.offsets);
        std::hint::black_box(e);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("json validate+enrich:     {n} rows in {:.1} ms = {:.0} rec/s", best * 1e3, n as f64 / best);
}
