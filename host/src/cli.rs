//! What the subcommands do, kept out of `main.rs` so they are testable and
//! `main` stays a thin clap layer.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::config::{self, ConfigErrors, Pipeline};
use crate::pipeline::plan::{self, Plan};
use crate::pipeline::runtime::{self, RunSummary};
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
        if let crate::config::SinkSpec::Parquet(pq) = sk {
            eprintln!("  output: {} → {}", name, pq.path);
        } else if let crate::config::SinkSpec::File(f) = sk {
            eprintln!("  output: {} → {}", name, f.path);
        }
    }
    eprintln!("  dead letters → {}", p.spec.dlq.path);
}

pub async fn run(file: &Path, summary_json: Option<&Path>) -> i32 {
    let (p, plan) = match prepare(file) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    let shutdown = shutdown_signal();
    match runtime::run(&p, plan, shutdown).await {
        Ok(s) => {
            print_summary(&s, &p);
            if let Some(path) = summary_json {
                if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&s).expect("summary json")) {
                    eprintln!("cannot write the summary to {}: {e}", path.display());
                    return EXIT_RUN;
                }
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUN
        }
    }
}
