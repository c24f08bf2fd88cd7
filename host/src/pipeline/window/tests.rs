//! The aggregate stage around the real count-aggregate plugin: firing,
//! lateness, session merging, restore from a snapshot, the state bound —
//! each test against the contract 0.1.0 build (`count_aggregate`) and, in
//! `contract_0_2`, the 0.2.0 build (`count_aggregate_v2`).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::detached::{detached, Detached};
use super::*;
use crate::batch::Batch;
use crate::config::window::{WindowKind, Windowing};
use crate::dead_letter::records_bytes;
use crate::pipeline::edge::Envelope;
use crate::pipeline::msg::Msg;

type Harness = Detached;

fn windowing(kind: WindowKind, lateness: i64) -> Windowing {
    Windowing {
        kind,
        allowed_lateness: lateness,
        idle_timeout: Duration::from_secs(3600),
        emit_every: None,
    }
}

thread_local! {
    /// The plugin `harness` builds the stage around.
    static PLUGIN: std::cell::Cell<&'static str> = const { std::cell::Cell::new("count_aggregate.wasm") };
}

fn harness(w: Windowing, saved: Option<&Value>) -> Harness {
    let keyed = StateMap::default();
    let plugin = crate::plugin::testing::aggregate(
        PLUGIN.get(),
        "agg",
        json!({"key": "k", "time": "t"}),
        keyed.clone(),
    )
    .expect("count-aggregate");
    let mut h = detached("agg", plugin, w, keyed, saved, 1024).expect("node");
    h.node.state_memory = 1 << 30;
    h
}

/// Records `(key, time)` as one batch of partition `p`.
fn batch(recs: &[(&str, i64)]) -> Batch {
    let docs: Vec<String> = recs
        .iter()
        .map(|(k, t)| json!({"k": k, "t": t}).to_string())
        .collect();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    Batch::json_docs("sources.in", &docs)
}

fn received(rx: &mut mpsc::Receiver<Envelope>) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(env) = rx.try_recv() {
        if let Msg::Data(b) = env.msg {
            out.extend(records_bytes(&b, 0..b.len()).iter().map(|r| serde_json::from_slice::<Value>(r).unwrap()));
        }
    }
    out
}

fn dead(rx: &mut mpsc::Receiver<Envelope>) -> Vec<DeadLetter> {
    let mut out = Vec::new();
    while let Ok(env) = rx.try_recv() {
        if let Msg::DeadLetters(d) = env.msg {
            out.extend(d);
        }
    }
    out
}

/// (window start ms, key, count) of each output, in output order.
fn counts(v: &[Value]) -> Vec<(i64, String, u64)> {
    v.iter()
        .map(|r| {
            (
                r["windowStartMs"].as_i64().unwrap(),
                r["key"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn tumbling_windows_fire_when_the_watermark_passes_in_end_then_key_order() {
    let mut h = harness(windowing(WindowKind::Tumbling { size: 100 }, 0), None);
    h.node
        .process(batch(&[("b", 10), ("a", 20), ("b", 99), ("a", 150)]))
        .unwrap();
    let out = received(&mut h.out);
    assert_eq!(
        counts(&out),
        [(0, r#""a""#.into(), 1), (0, r#""b""#.into(), 2)],
        "window [0,100) fired at watermark 150"
    );
    assert_eq!(out[0]["window_start"], "1970-01-01T00:00:00.000Z");
    assert_eq!(out[0]["window_end"], "1970-01-01T00:00:00.100Z");
    assert_eq!(out[0]["id"], r#"agg/0/"a""#);
    // Exactly at the end: the window [100, 200) fires at watermark 200.
    h.node.process(batch(&[("c", 200)])).unwrap();
    assert_eq!(counts(&received(&mut h.out)), [(100, r#""a""#.into(), 1)]);
    h.node.fire(i64::MAX).unwrap();
    assert_eq!(counts(&received(&mut h.out)), [(200, r#""c""#.into(), 1)]);
    assert!(dead(&mut h.dlq).is_empty());
}

#[test]
fn records_behind_the_lateness_bound_go_to_the_dlq_only() {
    let mut h = harness(windowing(WindowKind::Tumbling { size: 100 }, 50), None);
    // Watermark 140: [0,100) stays open (140 - 50 < 100), so 90 still counts.
    h.node
        .process(batch(&[("a", 10), ("a", 140), ("a", 90)]))
        .unwrap();
    assert!(received(&mut h.out).is_empty());
    // 151 moves the watermark past 100 + 50 inside the batch: the 95 after it is late,
    // whatever the batch boundaries.
    h.node
        .process(batch(&[("a", 151), ("a", 95), ("a", 120)]))
        .unwrap();
    assert_eq!(counts(&received(&mut h.out)), [(0, r#""a""#.into(), 2)]);
    let d = dead(&mut h.dlq);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].code.as_str(), &*d[0].node, d[0].meta.seq.as_str()),
        ("late", "stages.agg", "1")
    );
    assert!(
        d[0].message
            .contains("[1970-01-01T00:00:00.000Z, 1970-01-01T00:00:00.100Z)"),
        "{}",
        d[0].message
    );
    assert_eq!(d[0].record, br#"{"k":"a","t":95}"#);
    h.node.fire(i64::MAX).unwrap();
    assert_eq!(counts(&received(&mut h.out)), [(100, r#""a""#.into(), 3)]);
}

#[test]
fn sliding_windows_count_a_record_in_every_window_it_is_in() {
    let mut h = harness(
        windowing(
            WindowKind::Sliding {
                size: 200,
                slide: 100,
            },
            0,
        ),
        None,
    );
    h.node.process(batch(&[("a", 150), ("a", 250)])).unwrap();
    h.node.fire(i64::MAX).unwrap();
    assert_eq!(
        counts(&received(&mut h.out)),
        [
            (0, r#""a""#.into(), 1),
            (100, r#""a""#.into(), 2),
            (200, r#""a""#.into(), 1)
        ]
    );
}

#[test]
fn sessions_merge_across_batches_and_fire_after_the_gap() {
    let mut h = harness(windowing(WindowKind::Session { gap: 30 }, 100), None);
    h.node
        .process(batch(&[("a", 0), ("b", 5), ("a", 50)]))
        .unwrap();
    h.node.process(batch(&[("a", 25)])).unwrap(); // out of order, bridges [0,30) and [50,80)
    assert!(
        received(&mut h.out).is_empty(),
        "lateness 100 keeps every session open"
    );
    h.node.process(batch(&[("c", 300)])).unwrap();
    let out = received(&mut h.out);
    assert_eq!(
        counts(&out),
        [(5, r#""b""#.into(), 1), (0, r#""a""#.into(), 3)],
        "end order: b's session ends first"
    );
    assert_eq!(
        (
            out[1]["window_start"].as_str(),
            out[1]["window_end"].as_str()
        ),
        (
            Some("1970-01-01T00:00:00.000Z"),
            Some("1970-01-01T00:00:00.080Z")
        )
    );
    h.node.fire(i64::MAX).unwrap();
    assert_eq!(counts(&received(&mut h.out)), [(300, r#""c""#.into(), 1)]);
}

#[test]
fn a_record_reaching_into_a_closed_session_is_late_not_a_second_session() {
    // Gap 30, no lateness. Each late record below is not late by its own
    // session's end, but would reach into a session that is closed.
    let w = windowing(WindowKind::Session { gap: 30 }, 0);
    let mut h = harness(w, None);
    h.node.process(batch(&[("a", 0), ("a", 20)])).unwrap();
    h.node.process(batch(&[("z", 60)])).unwrap(); // a's [0, 50) fires
    assert_eq!(counts(&received(&mut h.out)), [(0, r#""a""#.into(), 2)]);
    // Across a checkpoint: the fired session is remembered.
    let saved = snapshot::take(&h.node);
    let mut h = harness(w, Some(&saved));
    // a@40 would reach [0, 50), which fired; a@55 starts a session of its own.
    h.node.process(batch(&[("a", 40), ("a", 55)])).unwrap();
    // b's [300, 330) closes at z@335 within the batch, before it fires.
    h.node.process(batch(&[("b", 300), ("z", 335), ("b", 320)])).unwrap();
    h.node.fire(i64::MAX).unwrap();
    assert_eq!(
        counts(&received(&mut h.out)),
        [
            (55, r#""a""#.into(), 1),
            (60, r#""z""#.into(), 1),
            (300, r#""b""#.into(), 1),
            (335, r#""z""#.into(), 1)
        ],
        "no session overlaps another of its key"
    );
    let d = dead(&mut h.dlq);
    let late: Vec<(&str, &[u8])> = d.iter().map(|l| (l.code.as_str(), l.record.as_slice())).collect();
    assert_eq!(late, [("late", &br#"{"k":"a","t":40}"#[..]), ("late", &br#"{"k":"b","t":320}"#[..])]);
    assert!(d[0].message.contains("[1970-01-01T00:00:00.000Z, 1970-01-01T00:00:00.050Z)"), "{}", d[0].message);
}

#[test]
fn a_fired_session_is_forgotten_once_no_record_can_reach_it() {
    let mut h = harness(windowing(WindowKind::Session { gap: 30 }, 0), None);
    h.node.process(batch(&[("a", 0), ("z", 59)])).unwrap();
    assert_eq!(h.node.store.fired_of(br#""a""#), Some(Span { start: 0, end: 30 }));
    // Closed 60 = end 30 + gap 30: a record before 30 is now late by its own end.
    h.node.process(batch(&[("z", 60)])).unwrap();
    assert_eq!(h.node.store.fired_of(br#""a""#), None);
}

#[test]
fn a_restored_stage_continues_as_if_never_stopped() {
    let w = windowing(WindowKind::Session { gap: 30 }, 10);
    let input: Vec<Vec<(&str, i64)>> = vec![
        vec![("a", 0), ("b", 5)],
        vec![("a", 20), ("b", 70)],
        vec![("a", 45), ("c", 100)],
        vec![("b", 90), ("a", 300)],
    ];
    let mut whole = harness(w, None);
    for b in &input {
        whole.node.process(batch(b)).unwrap();
    }
    whole.node.fire(i64::MAX).unwrap();
    let want = received(&mut whole.out);

    let mut first = harness(w, None);
    first.node.process(batch(&input[0])).unwrap();
    first.node.process(batch(&input[1])).unwrap();
    let mut got = received(&mut first.out);
    let saved = snapshot::take(&first.node);
    let mut second = harness(w, Some(&saved));
    second.node.process(batch(&input[2])).unwrap();
    second.node.process(batch(&input[3])).unwrap();
    second.node.fire(i64::MAX).unwrap();
    got.extend(received(&mut second.out));
    assert_eq!(got, want);
    assert!(want.len() >= 4, "{want:?}");
}

#[test]
fn a_checkpoint_from_a_newer_state_version_is_refused() {
    let mut h = harness(windowing(WindowKind::Tumbling { size: 100 }, 0), None);
    h.node.process(batch(&[("a", 1)])).unwrap();
    let mut saved = snapshot::take(&h.node);
    saved["state_version"] = json!(7);
    let w = windowing(WindowKind::Tumbling { size: 100 }, 0);
    let err = std::panic::catch_unwind(|| harness(w, Some(&saved)))
        .err()
        .expect("refused");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("state-version 7") && msg.contains("stages.agg"),
        "{msg}"
    );
}

#[test]
fn the_state_bound_stops_the_stage_with_a_clear_error() {
    let mut h = harness(windowing(WindowKind::Tumbling { size: 100 }, 0), None);
    h.node.state_memory = 1000;
    let recs: Vec<(String, i64)> = (0..20).map(|i| (format!("key{i}"), 1)).collect();
    let recs: Vec<(&str, i64)> = recs.iter().map(|(k, t)| (k.as_str(), *t)).collect();
    match h.node.process(batch(&recs)) {
        Err(Stop::Fatal(m)) => assert!(
            m.contains("state_memory") && m.contains("stages.agg"),
            "{m}"
        ),
        other => panic!("expected the bound to stop the stage: {other:?}"),
    }
}

#[test]
fn early_results_share_the_final_id_and_leave_state_alone() {
    let mut h = harness(windowing(WindowKind::Tumbling { size: 100 }, 0), None);
    h.node.process(batch(&[("a", 10), ("a", 20)])).unwrap();
    h.node.emit_early().unwrap();
    let early = received(&mut h.out);
    assert_eq!(counts(&early), [(0, r#""a""#.into(), 2)]);
    h.node.process(batch(&[("a", 30), ("b", 150)])).unwrap();
    let last = received(&mut h.out);
    assert_eq!(
        counts(&last),
        [(0, r#""a""#.into(), 3)],
        "the window stayed open and kept counting"
    );
    assert_eq!(early[0]["id"], last[0]["id"]);
}

/// The same tests with the plugin built against contract 0.2.0 (columns,
/// one `finish` per firing): the host's other path to the same results.
mod contract_0_2 {
    fn v2(test: fn()) {
        super::PLUGIN.set("count_aggregate_v2.wasm");
        test()
    }
    #[test]
    fn tumbling() {
        v2(super::tumbling_windows_fire_when_the_watermark_passes_in_end_then_key_order)
    }
    #[test]
    fn lateness() {
        v2(super::records_behind_the_lateness_bound_go_to_the_dlq_only)
    }
    #[test]
    fn sliding() {
        v2(super::sliding_windows_count_a_record_in_every_window_it_is_in)
    }
    #[test]
    fn sessions() {
        v2(super::sessions_merge_across_batches_and_fire_after_the_gap)
    }
    #[test]
    fn restore() {
        v2(super::a_restored_stage_continues_as_if_never_stopped)
    }
    #[test]
    fn state_bound() {
        v2(super::the_state_bound_stops_the_stage_with_a_clear_error)
    }
    #[test]
    fn early_results() {
        v2(super::early_results_share_the_final_id_and_leave_state_alone)
    }
}
