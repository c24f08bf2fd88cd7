//! `sluice bench`: the same validate+enrich logic (plugins/taxi-logic)
//! (a) compiled natively and called directly, (b) as Wasm plugins through the
//! host, each in JSON and Arrow form, and (c) end to end file → plugins →
//! Parquet in a child `sluice run`, whose peak RSS is read with wait4, and
//! (d) the windowed trip-statistics pipeline (`trip_stats`), and (e) the
//! aggregate stage alone and the cost of its state (`aggregate`).
//! Prints records/s and ratios; asserts nothing (speed is not a test).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Batch, BatchData, Format, Origin};
use crate::plugin::{host, wire, PluginEngine, PluginSpec, TransformPlugin};
use crate::source::rows::RowBatcher;

mod aggregate;
pub mod s3;
mod trip_stats;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Rows per measurement.
    #[arg(long, default_value_t = 500_000)]
    pub rows: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Fraction of corrupt rows in the generated input.
    #[arg(long, default_value_t = 0.02)]
    pub bad_fraction: f64,
    /// Directory with validate.wasm, enrich.wasm, validate_json.wasm, enrich_json.wasm.
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    pub plugins: PathBuf,
    /// Skip the end-to-end runs.
    #[arg(long)]
    pub no_e2e: bool,
    /// Repetitions per measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
}

struct Inputs {
    json: Vec<Batch>,
    arrow: Vec<Batch>,
    rows: u64,
}

fn inputs(args: &BenchArgs) -> Inputs {
    let opts = crate::gen::GenOptions { rows: args.rows, seed: 42, bad_fraction: args.bad_fraction };
    let origin = Arc::new(Origin { source: "bench".into(), partition: "bench".into() });
    let columns: Vec<String> = crate::gen::CSV_HEADER.split(',').map(str::to_string).collect();
    let mut out = Inputs { json: Vec::new(), arrow: Vec::new(), rows: 0 };
    for (format, into) in [(Format::Json, &mut out.json), (Format::Arrow, &mut out.arrow)] {
        let mut b = RowBatcher::new(format, columns.clone(), "sources.bench", &origin);
        let mut text = Vec::new();
        for start in (0..args.rows).step_by(args.batch.max(1)) {
            text.clear();
            for i in start..(start + args.batch as u64).min(args.rows) {
                crate::gen::row(&opts, i).write_csv(&mut text);
                text.push(b'\n');
            }
            b.push_csv_text(&text, start);
            if let (Some(batch), _) = b.take() {
                into.push(batch);
            }
        }
    }
    out.rows = out.json.iter().map(|b| b.len() as u64).sum();
    out
}

fn best(repeat: u32, mut f: impl FnMut() -> u64) -> (Duration, u64) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed());
    }
    (best, n)
}

fn native_json(inp: &Inputs) -> u64 {
    let (v, e) = (taxi_logic::ValidateConfig::default(), taxi_logic::EnrichConfig::default());
    let mut out = 0;
    for b in &inp.json {
        let BatchData::Json(j) = &b.data else { unreachable!() };
        let a = taxi_logic::json::validate(&v, &j.buf, &j.offsets);
        let c = taxi_logic::json::enrich(&e, &a.buf, &a.offsets);
        out += c.len() as u64;
    }
    out
}

fn native_arrow(inp: &Inputs) -> u64 {
    let (v, e) = (taxi_logic::ValidateConfig::default(), taxi_logic::EnrichConfig::default());
    let mut out = 0;
    for b in &inp.arrow {
        let BatchData::Arrow(rb) = &b.data else { unreachable!() };
        let (a, _, _) = taxi_logic::columnar::validate(&v, rb);
        let (c, _, _) = taxi_logic::columnar::enrich(&e, &a);
        out += c.num_rows() as u64;
    }
    out
}

fn plugin(engine: &PluginEngine, dir: &Path, file: &str) -> Result<TransformPlugin, String> {
    let linker = host::linker(&engine.engine).map_err(|e| e.to_string())?;
    let spec = PluginSpec {
        path: dir.join(file),
        stage: format!("stages.{file}"),
        config_json: "{}".into(),
        memory: 512 << 20,
        timeout: Duration::from_secs(30),
        grants: Default::default(),
    };
    TransformPlugin::new(engine, &linker, spec, Default::default()).map_err(|e| e.to_string())
}

/// Both plugins on every batch, including the host's encode/decode of each
/// call; adds the time spent in that encode/decode to `codec`.
fn wasm(v: &mut TransformPlugin, e: &mut TransformPlugin, batches: &[Batch], codec: &mut Duration) -> Result<u64, String> {
    let mut out = 0;
    for b in batches {
        let t = Instant::now();
        let input = wire::encode(&b.data)?;
        *codec += t.elapsed();
        let (r, _stateless) = v.process(&input).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mid = wire::encode(&wire::decode(r.output)?.0)?;
        *codec += t.elapsed();
        let (r, _stateless) = e.process(&mid).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let (_, n) = wire::decode(r.output)?;
        *codec += t.elapsed();
        out += n as u64;
    }
    Ok(out)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

pub async fn run(args: BenchArgs) -> i32 {
    match tokio::task::spawn_blocking(move || bench(&args)).await {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("bench failed: {e}");
            1
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            1
        }
    }
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    println!("sluice bench: {} rows ({}% corrupt), batches of {}, best of {}", args.rows, args.bad_fraction * 100.0, args.batch, args.repeat);
    // End to end first, while this process is small: a forked child's peak
    // RSS (wait4) starts at the parent's RSS before `exec`.
    if !args.no_e2e {
        end_to_end(args)?;
        trip_stats::end_to_end(args)?;
    }
    let inp = inputs(args);
    let enriched = trip_stats::enriched(&inp);
    let native = trip_stats::native(&enriched)?;
    let engine = PluginEngine::new(Some(crate::cli::default_cache_dir())).map_err(|e| e.to_string())?;
    aggregate::trip_stats(&engine, &args.plugins, &enriched, native, args.repeat)?;
    aggregate::million_keys(&engine, &args.plugins, args.batch, args.rows.min(1_000_000) as usize)?;
    let mut rows = Vec::new();
    for (form, files, native) in [
        ("json", ("validate_json.wasm", "enrich_json.wasm"), native_json as fn(&Inputs) -> u64),
        ("arrow", ("validate.wasm", "enrich.wasm"), native_arrow),
    ] {
        let (dn, nn) = best(args.repeat, || native(&inp));
        let mut v = plugin(&engine, &args.plugins, files.0)?;
        let mut e = plugin(&engine, &args.plugins, files.1)?;
        let batches = if form == "json" { &inp.json } else { &inp.arrow };
        let mut err = None;
        let mut codec = Duration::ZERO;
        let (dw, nw) = best(args.repeat, || {
            codec = Duration::ZERO;
            wasm(&mut v, &mut e, batches, &mut codec).unwrap_or_else(|x| {
                err = Some(x);
                0
            })
        });
        if let Some(x) = err {
            return Err(x);
        }
        if nn != nw {
            return Err(format!("{form}: native produced {nn} records, wasm {nw}: the two disagree"));
        }
        let (rn, rw) = (rate(inp.rows, dn), rate(inp.rows, dw));
        println!("  validate+enrich {form:<5}  native {rn:>12.0} rec/s   wasm {rw:>12.0} rec/s   wasm/native {:.2}", rw / rn);
        // Where the Wasm time goes: the host's batch encode/decode around the
        // calls (the last repetition), the rest is inside the calls (copy in,
        // the guest's own decode/encode and logic, copy out).
        let per = |d: Duration| d.as_nanos() as f64 / inp.rows as f64;
        println!(
            "      ns/record: native {:.0}; wasm {:.0} = host encode/decode {:.0} + plugin calls {:.0}",
            per(dn),
            per(dw),
            per(codec),
            per(dw.saturating_sub(codec))
        );
        rows.push((form, rn, rw));
    }
    if let [(_, jn, jw), (_, an, aw)] = rows[..] {
        println!("  arrow/json speed-up: native {:.2}x, wasm {:.2}x", an / jn, aw / jw);
    }
    Ok(())
}

/// File → validate → enrich → Parquet in a child `sluice run`, per form.
fn end_to_end(args: &BenchArgs) -> Result<(), String> {
    let dir = tempfile_dir()?;
    let csv = write_input(&dir, args.rows, args.bad_fraction)?;
    let one = dir.join("one.csv");
    crate::gen::write_file(&crate::gen::GenOptions { rows: 1, seed: 1, bad_fraction: 0.0 }, &one, None).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let plugins = plugins_dir(&args.plugins)?;
    for (form, v, e) in [("arrow", "validate.wasm", "enrich.wasm"), ("json", "validate_json.wasm", "enrich_json.wasm")] {
        let out = dir.join(form);
        let toml = e2e_pipeline(&E2e {
            name: &format!("bench-{form}"),
            out: &out,
            plugins: &plugins,
            wasm: (v, e),
            batch: args.batch,
            table: &format!("{}/trips", out.display()),
            sink_extra: "",
        });
        let file = dir.join(format!("{form}.toml"));
        std::fs::write(&file, toml).map_err(|e| e.to_string())?;
        // Start-up: a one-row input, fresh checkpoint, warm plugin cache.
        let _ = std::fs::remove_dir_all(&out);
        let (startup, _) = child_run(&exe, &file, &one)?;
        let _ = std::fs::remove_dir_all(&out);
        let (wall, rss_kib) = child_run(&exe, &file, &csv)?;
        println!(
            "  end to end {form:<5} file → validate → enrich → parquet: {:>10.0} rec/s  ({:.2}s, peak RSS {} MiB, start-up {} ms)",
            rate(args.rows, wall),
            wall.as_secs_f64(),
            rss_kib / 1024,
            startup.as_millis()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The generated input of the end-to-end runs: `rows` taxi trips (seed 42)
/// as `dir/taxi.csv`.
fn write_input(dir: &Path, rows: u64, bad_fraction: f64) -> Result<PathBuf, String> {
    let csv = dir.join("taxi.csv");
    let opts = crate::gen::GenOptions { rows, seed: 42, bad_fraction };
    crate::gen::write_file(&opts, &csv, None).map_err(|e| e.to_string())?;
    Ok(csv)
}

fn plugins_dir(p: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// One end-to-end pipeline: the file named by `BENCH_INPUT` → validate →
/// enrich → a Parquet table at `table`, checkpoint and DLQ under `out`.
struct E2e<'a> {
    name: &'a str,
    out: &'a Path,
    plugins: &'a Path,
    /// The validate and enrich plugin files.
    wasm: (&'a str, &'a str),
    batch: usize,
    /// The sink's `path`: a directory or `s3://bucket/prefix`.
    table: &'a str,
    /// More keys of the sink, one per line.
    sink_extra: &'a str,
}

/// The pipeline file of `p`. The interval is long so that only the last
/// barrier commits: the figures are the data path, not checkpoint cadence.
fn e2e_pipeline(p: &E2e) -> String {
    format!(
        r#"[pipeline]
name = "{name}"
[checkpoint]
dir = "{out}/checkpoint"
interval = "60s"
[batch]
max_records = {batch}
[dlq]
path = "{out}/dlq.ndjson"
[sources.trips]
type = "file"
path = "${{BENCH_INPUT}}"
infer_rows = 0
[stages.validate]
inputs = ["trips"]
plugin = "{plugins}/{v}"
[stages.enrich]
inputs = ["validate"]
plugin = "{plugins}/{e}"
[sinks.lake]
type = "parquet"
inputs = ["enrich"]
path = "{table}"
{extra}"#,
        name = p.name,
        out = p.out.display(),
        batch = p.batch,
        plugins = p.plugins.display(),
        v = p.wasm.0,
        e = p.wasm.1,
        table = p.table,
        extra = p.sink_extra,
    )
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}

/// Run `sluice run` as a child; wall time and its peak RSS (KiB) from wait4.
fn child_run(exe: &Path, pipeline: &Path, input: &Path) -> Result<(Duration, u64), String> {
    let t = Instant::now();
    let child = std::process::Command::new(exe)
        .args(["--quiet", "run"])
        .arg(pipeline)
        .env("BENCH_INPUT", input)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call on our own child's pid with valid out-pointers;
    // rusage is a C struct for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("`sluice run {}` failed (status {status})", pipeline.display()));
    }
    Ok((wall, usage.ru_maxrss as u64))
}
