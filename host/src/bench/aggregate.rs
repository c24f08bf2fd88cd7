//! `sluice bench`, aggregate-stage section: the stage alone on one thread
//! (its `extract` and `accumulate` calls, window assignment, grouping, the
//! state store, firing and `finish`), in records/s per core of the thread's
//! CPU time; and what state costs: bytes per 1M open keys, and the
//! checkpoint of that state (value size, encode, restore), which is not
//! incremental (ARCHITECTURE.md, invariant on aggregate stages).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use serde_json::json;

use super::rate;
use crate::batch::{Batch, BatchData, Origin, RecordMeta};
use crate::config::window::{WindowKind, Windowing};
use crate::pipeline::edge::Envelope;
use crate::pipeline::msg::Msg;
use crate::pipeline::window::detached::{detached, Detached};
use crate::pipeline::window::snapshot;
use crate::plugin::host::{linker, StateMap};
use crate::plugin::{AggregatePlugin, PluginEngine, PluginSpec};

/// CPU time of the calling thread: the stage runs on one thread, so this is
/// its cost per core whatever else the machine does.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn plugin(engine: &PluginEngine, dir: &Path, file: &str, config: serde_json::Value, state: StateMap) -> Result<AggregatePlugin, String> {
    let l = linker(&engine.engine).map_err(|e| e.to_string())?;
    let spec = PluginSpec {
        path: dir.join(file),
        stage: "stages.agg".into(),
        config_json: config.to_string(),
        memory: 1 << 30,
        timeout: Duration::from_secs(60),
        grants: Default::default(),
    };
    AggregatePlugin::new(engine, &l, spec, state).map_err(|e| e.to_string())
}

fn stage(engine: &PluginEngine, dir: &Path, file: &str, config: serde_json::Value, w: Windowing) -> Result<Detached, String> {
    let keyed = StateMap::default();
    let p = plugin(engine, dir, file, config, keyed.clone())?;
    detached("agg", p, w, keyed, None, 1 << 16).map_err(|e| e.to_string())
}

fn count(m: &Msg) -> u64 {
    match m {
        Msg::Data(b) => b.len() as u64,
        Msg::DeadLetters(l) => l.len() as u64,
        _ => 0,
    }
}

/// Reads and counts what the stage sends, so its blocking sends never
/// wait: (results, dead letters), once the stage is dropped.
fn drain(d: &mut Detached) -> impl FnOnce() -> (u64, u64) {
    let counter = |mut rx: tokio::sync::mpsc::Receiver<Envelope>| {
        std::thread::spawn(move || {
            let mut n = 0;
            while let Some(e) = rx.blocking_recv() {
                n += count(&e.msg);
            }
            n
        })
    };
    let closed = || tokio::sync::mpsc::channel(1).1;
    let out = counter(std::mem::replace(&mut d.out, closed()));
    let dlq = counter(std::mem::replace(&mut d.dlq, closed()));
    move || (out.join().unwrap_or(0), dlq.join().unwrap_or(0))
}

/// Every batch through the stage, then the end of input (every window
/// fires): (records in, CPU time, wall time, results, dead letters).
fn run(mut d: Detached, batches: Vec<Batch>) -> Result<(u64, Duration, Duration, u64, u64), String> {
    let n: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let drainer = drain(&mut d);
    let _g = d.rt.enter();
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for b in batches {
        d.node.process(b).map_err(|e| format!("{e:?}"))?;
    }
    d.node.fire(i64::MAX).map_err(|e| format!("{e:?}"))?;
    let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
    drop(_g);
    drop(d);
    let (results, letters) = drainer();
    Ok((n, cpu, wall, results, letters))
}

fn arrow_batches(enriched: &[RecordBatch]) -> Vec<Batch> {
    let origin = Arc::new(Origin { source: "sources.bench".into(), partition: "bench".into() });
    let mut line = 0u64;
    enriched
        .iter()
        .map(|rb| {
            let meta = (line..line + rb.num_rows() as u64).map(RecordMeta::line).collect();
            line += rb.num_rows() as u64;
            Batch { origin: Arc::clone(&origin), meta, data: BatchData::Arrow(rb.clone()) }
        })
        .collect()
}

/// trip-stats over enriched trips (1-minute tumbling windows per vendor),
/// against the same logic called natively (`native_rate`, records/s).
pub(super) fn trip_stats(engine: &PluginEngine, dir: &Path, enriched: &[RecordBatch], native_rate: f64, repeat: u32) -> Result<(), String> {
    let w = Windowing {
        kind: WindowKind::Tumbling { size: 60_000 },
        allowed_lateness: 600_000,
        idle_timeout: Duration::from_secs(30),
        emit_every: None,
    };
    let mut best: Option<(u64, Duration, Duration, u64, u64)> = None;
    for _ in 0..repeat.max(1) {
        let d = stage(engine, dir, "trip_stats.wasm", json!({}), w)?;
        let r = run(d, arrow_batches(enriched))?;
        if best.is_none_or(|b| r.1 < b.1) {
            best = Some(r);
        }
    }
    let (n, cpu, wall, results, letters) = best.expect("one run at least");
    let per_core = rate(n, cpu);
    let calls = calls_only(engine, dir, enriched)?;
    println!(
        "  aggregate stage alone, trip-stats (Arrow, 1m tumbling): {per_core:>10.0} rec/s per core  ({:.0} rec/s wall; {results} window results, {letters} dead letters; native logic/stage {:.1}x)",
        rate(n, wall),
        native_rate / per_core
    );
    let ns = |d: Duration| d.as_nanos() as f64 / n as f64;
    let plugin = calls.extract + calls.accumulate + calls.finish;
    println!(
        "      ns/record: stage {:.0} = plugin calls {:.0} (extract {:.0} of which the host's encode of its input {:.0}, accumulate {:.0}, finish {:.0}) + the host's window work {:.0}",
        ns(cpu),
        ns(plugin),
        ns(calls.extract),
        ns(calls.encode),
        ns(calls.accumulate),
        ns(calls.finish),
        ns(cpu.saturating_sub(plugin))
    );
    Ok(())
}

/// CPU time of the plugin calls alone over the same batches, as the stage
/// makes them (one `accumulate` per batch with its groups, one `finish` per
/// window): what the boundary and the guest cost apart from the host's
/// window work.
struct Calls {
    /// The host's encode of the batch for the call (part of `extract`).
    encode: Duration,
    extract: Duration,
    accumulate: Duration,
    finish: Duration,
}

fn calls_only(engine: &PluginEngine, dir: &Path, enriched: &[RecordBatch]) -> Result<Calls, String> {
    use crate::plugin::bindings::columns::{Blobs, Closed};
    use crate::plugin::columns::GroupsBuilder;
    use std::collections::BTreeMap;
    let e = |e: crate::plugin::PluginError| e.to_string();
    let keyed = StateMap::default();
    let mut p = plugin(engine, dir, "trip_stats.wasm", json!({}), keyed.clone())?;
    let mut calls = Calls { encode: Duration::ZERO, extract: Duration::ZERO, accumulate: Duration::ZERO, finish: Duration::ZERO };
    let mut states: BTreeMap<(i64, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for b in &arrow_batches(enriched) {
        let cpu = thread_cpu();
        let input = crate::plugin::wire::encode(&b.data)?;
        let encoded = thread_cpu();
        let (x, _) = p.extract(&input, b.len()).map_err(e)?;
        calls.encode += encoded - cpu;
        calls.extract += thread_cpu() - cpu;
        let mut groups: BTreeMap<(i64, &[u8]), Vec<usize>> = BTreeMap::new();
        for i in 0..x.len() {
            groups.entry((x.event_time_ms[i].div_euclid(60_000) * 60_000, x.keys.get(i))).or_default().push(i);
        }
        let mut g = GroupsBuilder::default();
        for ((start, key), members) in &groups {
            g.group(*start, start + 60_000, key, states.get(&(*start, key.to_vec())).map(Vec::as_slice));
            for &i in members {
                g.value(x.values.get(i));
            }
        }
        let g = g.finish();
        let cpu = thread_cpu();
        let (new, _) = p.accumulate(&g).map_err(e)?;
        calls.accumulate += thread_cpu() - cpu;
        for (((start, key), _), s) in groups.into_iter().zip(new.iter()) {
            states.insert((start, key.to_vec()), s.to_vec());
        }
    }
    // Windows fire in as many calls as there were batches (the watermark
    // moves once per batch), in firing order; the baselines it keeps are
    // committed, as the stage does.
    let per_call = states.len().div_ceil(enriched.len().max(1)).max(1);
    let mut minutes: BTreeMap<usize, Closed> = BTreeMap::new();
    for (i, ((start, key), s)) in states.iter().enumerate() {
        let c = minutes.entry(i / per_call).or_insert_with(|| Closed {
            window_start_ms: vec![],
            window_end_ms: vec![],
            keys: Blobs::default(),
            states: Blobs::default(),
        });
        c.window_start_ms.push(*start);
        c.window_end_ms.push(start + 60_000);
        c.keys.push(key);
        c.states.push(s);
    }
    let cpu = thread_cpu();
    for c in minutes.values() {
        p.finish(c).map_err(e)?.1.commit(&keyed);
    }
    calls.finish = thread_cpu() - cpu;
    Ok(calls)
}

/// The generic `aggregate` plugin counting `keys` distinct keys (1M unless
/// the run is smaller) in one window: records/s per core with as many keys as
/// records, bytes of state per 1M open keys, and the checkpoint of that state.
pub(super) fn million_keys(engine: &PluginEngine, dir: &Path, batch: usize, keys: usize) -> Result<(), String> {
    let n = keys.max(1);
    let w = Windowing {
        kind: WindowKind::Tumbling { size: 3_600_000 },
        allowed_lateness: 0,
        idle_timeout: Duration::from_secs(3600),
        emit_every: None,
    };
    let config = json!({"time_field": "t", "time_format": "epoch_ms", "group_by": ["k"], "metrics": [{"op": "count"}, {"op": "sum", "field": "v"}]});
    let mut d = stage(engine, dir, "aggregate.wasm", config.clone(), w)?;
    let batches: Vec<Batch> = (0..n)
        .collect::<Vec<_>>()
        .chunks(batch.max(1))
        .map(|c| {
            let docs: Vec<String> = c.iter().map(|i| format!(r#"{{"k":"key{i:07}","t":{},"v":{}}}"#, i / 1000, i % 97)).collect();
            let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
            Batch::json_docs("sources.bench", &docs)
        })
        .collect();
    let drainer = drain(&mut d);
    let g = d.rt.enter();
    let cpu = thread_cpu();
    for b in batches {
        d.node.process(b).map_err(|e| format!("{e:?}"))?;
    }
    let cpu = thread_cpu() - cpu;
    let open = d.node.store.len();
    if open != n {
        return Err(format!("expected {n} open windows, found {open}"));
    }
    let bytes = d.node.store.bytes() + snapshot::keyed_bytes(&d.node.keyed);
    let t = Instant::now();
    let saved = snapshot::take(&d.node);
    let value = serde_json::to_vec(&saved).map_err(|e| e.to_string())?;
    let encode = t.elapsed();
    drop(g);
    let t = Instant::now();
    let keyed = StateMap::default();
    let p = plugin(engine, dir, "aggregate.wasm", config, keyed.clone())?;
    let back = detached("agg", p, w, keyed, Some(&saved), 1).map_err(|e| e.to_string())?;
    let restore = t.elapsed();
    if back.node.store.len() != n {
        return Err(format!("the restored stage holds {} windows, not {n}", back.node.store.len()));
    }
    drop(back);
    drop(d);
    drainer();
    println!(
        "  aggregate stage alone, generic aggregate (JSON, count+sum), {n} keys open: {:>10.0} rec/s per core; state {:.0} MB per 1M keys ({:.0} B/key); checkpoint value {:.0} MB, encode {:.2}s, restore {:.2}s",
        rate(n as u64, cpu),
        bytes as f64 / n as f64,
        bytes as f64 / n as f64,
        value.len() as f64 / 1e6,
        encode.as_secs_f64(),
        restore.as_secs_f64()
    );
    Ok(())
}

