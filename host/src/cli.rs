//! What the subcommands do, kept out of `main.rs` so they are testable and
//! `main` stays a thin clap layer.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::config::{self, ConfigErrors, Pipeline};
use crate::pipeline::plan::{self, Plan};
use crate::pipeline::reset::{self, Confirm};
use crate::pipeline::runtime::{self, RunSummary};
use crate::pipeline::stats;
use crate::plugin::{host, PluginEngine};

/// Exit codes: 0 done, 1 the run failed, 2 the pipeline file is wrong.
pub const EXIT_RUN: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;

/// Where compiled plugins are cached unless the pipeline says otherwise.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLUICE_CACHE_DIR") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("sluice");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return Path::new(&h).join(".cache/sluice");
    }
    PathBuf::from(".sluice/cache")
}

pub fn engine_for(p: &Pipeline) -> Result<PluginEngine, ConfigErrors> {
    let dir = p.spec.pipeline.cache_dir.as_ref().map(PathBuf::from).unwrap_or_else(default_cache_dir);
    PluginEngine::new(Some(dir)).map_err(|e| p.error_at(&["pipeline"], e.to_string()).into())
}

/// Load, check and plan a pipeline: everything short of running it.
pub fn prepare(file: &Path) -> Result<(Pipeline, Plan), ConfigErrors> {
    let p = config::load(file)?;
    let engine = engine_for(&p)?;
    let linker = host::linker(&engine.engine).map_err(|e| ConfigErrors::from(p.error_at(&[], e.to_string())))?;
    let plan = plan::build(&p, &engine, &linker)?;
    Ok((p, plan))
}

/// A watch channel that flips on SIGINT or SIGTERM (a second signal exits at once).
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                eprintln!("second signal: exiting without a final checkpoint (the next run resumes from the last one)");
                std::process::exit(130);
            }
            let _ = tx.send(true);
        }
    });
    rx
}

pub fn print_summary(s: &RunSummary, p: &Pipeline) {
    let secs = (s.elapsed_ms as f64 / 1000.0).max(1e-3);
    eprintln!();
    eprintln!("pipeline {} finished in {:.2}s (checkpoint epoch {}, resumed from {})", s.pipeline, secs, s.epoch, s.resumed_from);
    eprintln!("  {:<28} {:>12} {:>12} {:>10} {:>8}", "node", "in", "out", "rejected", "files");
    for (k, n) in &s.nodes {
        let files = if n.outputs > 0 { n.outputs.to_string() } else { String::new() };
        eprintln!("  {:<28} {:>12} {:>12} {:>10} {:>8}", k, n.records_in, n.records_out, n.rejected, files);
    }
    for (k, n) in s.nodes.iter().filter(|(_, n)| n.default_partition > 0) {
        eprintln!("  warning: {k} wrote {} records to __HIVE_DEFAULT_PARTITION__ (a partition_by column absent or null)", n.default_partition);
    }
    let read: u64 = s.nodes.iter().filter(|(k, _)| k.starts_with("sources.")).map(|(_, n)| n.records_in).sum();
    eprintln!("  {:.0} records/s read", read as f64 / secs);
    for (name, sk) in &p.spec.sinks {
        eprintln!("  output: {} → {}", name, sk.describe_destination());
    }
    eprintln!("  dead letters → {}", p.spec.dlq.path);
    if s.resumed_from > 0 && read == 0 {
        // A user iterating on a plugin reruns and wonders why nothing happened.
        eprintln!(
            "  nothing new to read since checkpoint epoch {}: to process everything again, run `sluice run --from-scratch {}`",
            s.resumed_from,
            p.file.display()
        );
    }
}

/// Options of `sluice run` beyond the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Also write the run summary as JSON here.
    pub summary_json: Option<PathBuf>,
    /// Exit 1 (after the final checkpoint) when a node rejected more than
    /// this fraction of its input; overrides `[pipeline] max_reject_rate`.
    pub max_reject_rate: Option<f64>,
    /// Reset the pipeline (checkpoint and outputs) before running.
    pub from_scratch: bool,
    /// Confirm the reset without asking.
    pub yes: bool,
}

/// Warn about every node that rejected more than 10% of its input; `true`
/// when one rejected more than `limit` (the run then fails).
pub fn judge_rejections(s: &RunSummary, p: &Pipeline, limit: Option<f64>) -> bool {
    let threshold = limit.map_or(stats::WARN_REJECT_RATE, |l| l.min(stats::WARN_REJECT_RATE));
    let mut failed = false;
    for (node, n, rate) in stats::rejecting_more_than(&s.nodes, threshold) {
        let over = limit.is_some_and(|l| rate > l);
        failed |= over;
        eprintln!(
            "{}: {node} rejected {} of {} records ({:.1}%); they are in the DLQ at {} (each with `code` and `message`)",
            if over { "error" } else { "warning" },
            n.rejected,
            n.records_in,
            rate * 100.0,
            p.spec.dlq.path
        );
    }
    if let (true, Some(l)) = (failed, limit) {
        eprintln!(
            "error: rejections above max_reject_rate = {l}; every record is checkpointed (in the output or the DLQ): \
             fix the data or the plugin's config, then `sluice reset` and run again"
        );
    }
    failed
}

/// `sluice reset`: exit 0 when done (or nothing to do), 1 when refused or
/// incomplete, 2 when the pipeline file is wrong.
/// `sluice ddl`: prints the `CREATE EXTERNAL TABLE` of a Parquet sink.
pub fn ddl(file: &Path, sink: &str, table: Option<&str>, projection: bool) -> i32 {
    let p = match config::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    match ddl_text(&p, sink, table, projection) {
        Ok(text) => {
            println!("{text};");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CONFIG
        }
    }
}

fn ddl_text(p: &Pipeline, sink: &str, table: Option<&str>, projection: bool) -> Result<String, String> {
    use crate::config::SinkSpec;
    use crate::sink::parquet;
    let parquet_sinks = || {
        p.spec.sinks.iter().filter(|(_, s)| matches!(s, SinkSpec::Parquet(_))).map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    };
    let spec = match p.spec.sinks.get(sink) {
        Some(SinkSpec::Parquet(s)) => s,
        Some(_) => return Err(format!("sink {sink} is not a parquet sink (parquet sinks: {})", parquet_sinks())),
        None => return Err(format!("{} has no sink {sink} (parquet sinks: {})", p.file.display(), parquet_sinks())),
    };
    let schema = match spec.declared_schema() {
        Some(s) => s,
        None => {
            // The schema was taken from the data: the checkpoint records it.
            let dir = &p.spec.checkpoint.dir;
            let missing = || format!("sink {sink} declares no `columns` and its checkpoint in {dir} records no schema yet: run the pipeline once, or declare `columns`");
            if dir.starts_with("s3://") {
                return Err(format!("sink {sink} declares no `columns`; reading its schema from an S3 checkpoint is not supported: declare `columns`"));
            }
            let cp = crate::checkpoint::local::probe(Path::new(dir)).map_err(|e| e.to_string())?.ok_or_else(missing)?;
            let token = cp.nodes.get(&format!("sinks.{sink}")).ok_or_else(missing)?;
            parquet::schema_of_token(token)?.ok_or_else(missing)?
        }
    };
    let location = if spec.path.starts_with("s3://") {
        spec.path.clone()
    } else {
        let abs = std::path::absolute(&spec.path).map_err(|e| format!("{}: {e}", spec.path))?;
        format!("file://{}", abs.display())
    };
    let proj = projection.then(|| parquet::Projection { seen: partition_values(&spec.path, &spec.partition_by) });
    Ok(parquet::athena_ddl_with(spec, &schema, table.unwrap_or(sink), &location, proj.as_ref()))
}

/// Partition values found under a local table (empty for S3 or no data).
fn partition_values(root: &str, partition_by: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut seen: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut level = vec![PathBuf::from(root)];
    for col in partition_by {
        let mut next = Vec::new();
        for dir in level {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix(&format!("{col}=")) {
                    seen.entry(col.clone()).or_default().insert(v.to_owned());
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    seen.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

pub async fn reset(file: &Path, yes: bool) -> i32 {
    let p = match config::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    reset_loaded(&p, yes).await
}

async fn reset_loaded(p: &Pipeline, yes: bool) -> i32 {
    match reset::reset(p, if yes { Confirm::Yes } else { Confirm::Ask }).await {
        Ok(_) => 0,
        Err(reset::ResetError::Config(e)) => {
            eprintln!("{e}");
            EXIT_CONFIG
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUN
        }
    }
}

pub async fn run(file: &Path, opts: &RunOptions) -> i32 {
    let (p, plan) = match prepare(file) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    if opts.from_scratch {
        let code = reset_loaded(&p, opts.yes).await;
        if code != 0 {
            return code;
        }
    }
    let limit = opts.max_reject_rate.or(p.spec.pipeline.max_reject_rate);
    let shutdown = shutdown_signal();
    match runtime::run(&p, plan, shutdown).await {
        Ok(s) => {
            print_summary(&s, &p);
            if let Some(path) = &opts.summary_json {
                if let Err(e) =
                    std::fs::write(path, serde_json::to_vec_pretty(&s).expect("summary json"))
                {
                    eprintln!("cannot write the summary to {}: {e}", path.display());
                    return EXIT_RUN;
                }
            }
            // After the final checkpoint: nothing is lost, the run only says
            // it did not go as it should.
            if judge_rejections(&s, &p, limit) {
                return EXIT_RUN;
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUN
        }
    }
}
