//! The `sluice` command line. Everything it does lives in the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sluice::cli;
use sluice::telemetry::{self, LogFormat};

// Arrow and Parquet allocate and free large buffers per batch; glibc's
// allocator hands them back to the kernel and page-faults them in again.
// mimalloc keeps them: measured below in `sluice bench` end to end.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Streaming pipelines with WebAssembly transforms")]
struct Args {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Only warnings and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline until its sources are exhausted or SIGINT/SIGTERM; resumes from its checkpoint.
    Run {
        pipeline: PathBuf,
        /// Also write the run summary as JSON.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Exit 1 (after the final checkpoint; the records are in the DLQ) when a
        /// source, stage or sink rejected more than this fraction (0..1) of its
        /// input. Overrides `[pipeline] max_reject_rate`.
        #[arg(long, value_name = "R", value_parser = parse_rate)]
        max_reject_rate: Option<f64>,
        /// First remove the pipeline's checkpoint, sink outputs and DLQ (as
        /// `sluice reset` does, with the same confirmation).
        #[arg(long)]
        from_scratch: bool,
        /// Confirm --from-scratch without asking.
        #[arg(long, short, requires = "from_scratch")]
        yes: bool,
    },
    /// Remove a pipeline's checkpoint, sink outputs and DLQ (the paths its file
    /// declares, nothing else), so the next run starts from the beginning.
    Reset {
        pipeline: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Check a pipeline file and its plugins without running it.
    Validate { pipeline: PathBuf },
    /// Print the Athena (Hive) CREATE EXTERNAL TABLE of a Parquet sink.
    Ddl {
        pipeline: PathBuf,
        /// The sink (`[sinks.NAME]`).
        #[arg(long)]
        sink: String,
        /// Table name (default: the sink's name).
        #[arg(long)]
        table: Option<String>,
        /// Add partition projection properties (no MSCK REPAIR or crawler
        /// needed): calendar ranges for month/day/hour, ranges or values
        /// found under a local table, `injected` otherwise.
        #[arg(long)]
        projection: bool,
    },
    /// Generate sample data.
    Gen {
        #[command(subcommand)]
        what: GenCmd,
    },
    /// Measure validate+enrich: native vs Wasm, JSON vs Arrow, and end to end.
    Bench(sluice::bench::BenchArgs),
    /// Read throughput of the Kinesis source vs a bare GetRecords loop (on an emulator such as kinesalite).
    BenchKinesis(sluice::bench_kinesis::Args),
    /// Bulk docs/s of the OpenSearch sink vs a bare bulk loop, and read → searchable latency (on a local OpenSearch).
    BenchOpensearch(sluice::bench_opensearch::Args),
    /// End-to-end records/s into a local Parquet table vs an S3 table, same input, as ratios.
    BenchS3(sluice::bench::s3::Args),
    /// Put a CSV/NDJSON file of trips into a Kinesis stream (the seed's KPL producer, done right).
    Produce(sluice::produce::ProduceArgs),
}

#[derive(Subcommand)]
enum GenCmd {
    /// NYC taxi trips (CSV if --out ends in .csv, NDJSON otherwise).
    Taxi {
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fraction of corrupt rows (of several kinds).
        #[arg(long, default_value_t = 0.0)]
        bad_fraction: f64,
        #[arg(long)]
        out: PathBuf,
        /// Also write one line per row with its expected rejection code.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a fraction from 0 to 1 (e.g. 0.05 for 5%)"
        )),
    }
}

fn main() {
    let args = Args::parse();
    telemetry::init(args.log_format, args.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async move {
        match args.cmd {
            Cmd::Run {
                pipeline,
                summary_json,
                max_reject_rate,
                from_scratch,
                yes,
            } => {
                let opts = cli::RunOptions {
                    summary_json,
                    max_reject_rate,
                    from_scratch,
                    yes,
                };
                cli::run(&pipeline, &opts).await
            }
            Cmd::Reset { pipeline, yes } => cli::reset(&pipeline, yes).await,
            Cmd::Ddl { pipeline, sink, table, projection } => cli::ddl(&pipeline, &sink, table.as_deref(), projection),
            Cmd::Validate { pipeline } => match cli::prepare(&pipeline) {
                Ok((p, plan)) => {
                    print!("{}", sluice::pipeline::plan::describe(&p, &plan));
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    cli::EXIT_CONFIG
                }
            },
            Cmd::Gen { what: GenCmd::Taxi { rows, seed, bad_fraction, out, labels } } => {
                let opts = sluice::gen::GenOptions { rows, seed, bad_fraction };
                match sluice::gen::write_file(&opts, &out, labels.as_deref()) {
                    Ok(r) => {
                        eprintln!("wrote {} rows to {} ({:?})", r.rows, out.display(), r);
                        0
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        1
                    }
                }
            }
            Cmd::Bench(b) => sluice::bench::run(b).await,
            Cmd::BenchKinesis(a) => sluice::bench_kinesis::run(a).await,
            Cmd::BenchOpensearch(a) => sluice::bench_opensearch::run(a).await,
            Cmd::BenchS3(a) => sluice::bench::s3::run(a).await,
            Cmd::Produce(args) => match sluice::produce::run(args).await {
                Ok(report) => {
                    eprintln!("produce: {report}");
                    if report.success() {
                        0
                    } else {
                        1
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            },
        }
    });
    std::process::exit(code);
}
