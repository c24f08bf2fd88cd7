//! `sluice bench-s3`: the end-to-end pipeline of `sluice bench` (file →
//! validate → enrich → Parquet, Arrow plugins) in a child `sluice run`, from
//! the same generated input into a local table and into an S3 table,
//! alternately, `--repeat` times each. Prints records/s end to end for each
//! (median), the table bytes each wrote, and S3/local as ratios. Checkpoint
//! and DLQ stay on local disk in both runs, so the sink's backend is the only
//! difference. Asserts nothing about speed (the figures depend on the
//! endpoint: an emulator on loopback is not AWS).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

use super::{child_run, e2e_pipeline, plugins_dir, rate, tempfile_dir, write_input, E2e};
use crate::s3::ClientOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The bucket of the S3 table; created if missing when an endpoint is
    /// overridden (flag, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`).
    /// Tables go under `sluice-bench-PID/` and are removed after each run.
    #[arg(long)]
    pub bucket: String,
    /// S3 endpoint (moto, LocalStack, MinIO), with path-style addressing.
    /// Default: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The bucket's region (default: the AWS configuration's).
    #[arg(long)]
    pub region: Option<String>,
    /// Rows of generated taxi trips per run.
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Fraction of corrupt rows in the generated input.
    #[arg(long, default_value_t = 0.02)]
    pub bad_fraction: f64,
    /// Hive partition columns of both tables, comma-separated (e.g.
    /// `year,month,day,hour,vendorId`, as `pipelines/taxi-local.toml`).
    /// Default: none, as `sluice bench` (one file per run).
    #[arg(long, value_delimiter = ',')]
    pub partition_by: Vec<String>,
    /// Directory with validate.wasm and enrich.wasm.
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    pub plugins: PathBuf,
    /// Runs per destination (local and S3 alternate); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Keep the S3 tables (default: removed after each run is measured).
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(args: Args) -> i32 {
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || bench(&args, &handle)).await {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("bench-s3 failed: {e}");
            1
        }
        Err(e) => {
            eprintln!("bench-s3 failed: {e}");
            1
        }
    }
}

/// What one run wrote: the table's data files (hidden keys excluded).
#[derive(Default, Clone, Copy)]
struct Written {
    files: u64,
    bytes: u64,
}

/// Blocking: each run is a child process waited on with wait4; the S3 calls
/// go through `rt`.
fn bench(a: &Args, rt: &tokio::runtime::Handle) -> Result<(), String> {
    let client = rt.block_on(crate::s3::client(&ClientOptions {
        region: a.region.clone(),
        endpoint: a.endpoint.clone(),
    }));
    let endpoint = a.endpoint.clone().or_else(|| {
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    });
    rt.block_on(ensure_bucket(&client, &a.bucket, endpoint.is_some()))?;
    let prefix = format!("sluice-bench-{}", std::process::id());
    println!(
        "sluice bench-s3: {} rows ({}% corrupt), batches of {}, partitioned by [{}], median of {}; S3 table in s3://{}/{prefix} via {}",
        a.rows,
        a.bad_fraction * 100.0,
        a.batch,
        a.partition_by.join(", "),
        a.repeat.max(1),
        a.bucket,
        endpoint.as_deref().unwrap_or("AWS")
    );
    let dir = tempfile_dir()?.join("s3");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let csv = write_input(&dir, a.rows, a.bad_fraction)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let plugins = plugins_dir(&a.plugins)?;
    let mut extra = String::new();
    if !a.partition_by.is_empty() {
        let cols: Vec<String> = a.partition_by.iter().map(|c| format!("{c:?}")).collect();
        extra.push_str(&format!("partition_by = [{}]\n", cols.join(", ")));
    }
    let mut s3_extra = extra.clone();
    if let Some(ep) = &a.endpoint {
        s3_extra.push_str(&format!("endpoint = {ep:?}\n"));
    }
    if let Some(r) = &a.region {
        s3_extra.push_str(&format!("region = {r:?}\n"));
    }
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    let (mut local_w, mut remote_w) = (Written::default(), Written::default());
    let outcome = (|| {
        for round in 1..=a.repeat.max(1) {
            // Local first, then S3, in every round: drift on a shared machine
            // touches both alike.
            let out = dir.join("local");
            let _ = std::fs::remove_dir_all(&out);
            let table = out.join("trips");
            let (wall, _) = run_one(
                &exe,
                &dir,
                &csv,
                "local",
                &E2e {
                    name: "bench-s3-local",
                    out: &out,
                    plugins: &plugins,
                    wasm: ("validate.wasm", "enrich.wasm"),
                    batch: a.batch,
                    table: &table.display().to_string(),
                    sink_extra: &extra,
                },
            )?;
            local_w = local_table(&table)?;
            local.push(wall);

            let out = dir.join("s3");
            let _ = std::fs::remove_dir_all(&out);
            let key_prefix = format!("{prefix}/run-{round}/trips");
            let (wall_s3, _) = run_one(
                &exe,
                &dir,
                &csv,
                "s3",
                &E2e {
                    name: "bench-s3-s3",
                    out: &out,
                    plugins: &plugins,
                    wasm: ("validate.wasm", "enrich.wasm"),
                    batch: a.batch,
                    table: &format!("s3://{}/{key_prefix}", a.bucket),
                    sink_extra: &s3_extra,
                },
            )?;
            let keys = rt.block_on(list(&client, &a.bucket, &key_prefix))?;
            remote_w = Written {
                files: keys
                    .iter()
                    .filter(|(k, _)| !k.contains("/.sluice/"))
                    .count() as u64,
                bytes: keys
                    .iter()
                    .filter(|(k, _)| !k.contains("/.sluice/"))
                    .map(|(_, n)| n)
                    .sum(),
            };
            remote.push(wall_s3);
            if !a.keep {
                rt.block_on(remove(&client, &a.bucket, keys.into_iter().map(|(k, _)| k)))?;
            }
            eprintln!(
                "round {round}: local {:.0} rec/s, s3 {:.0} rec/s",
                rate(a.rows, wall),
                rate(a.rows, wall_s3)
            );
            for (what, w) in [("local", local_w), ("S3", remote_w)] {
                if w.files == 0 {
                    return Err(format!("the {what} run wrote no Parquet file"));
                }
            }
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    let (l, s) = (median(&mut local), median(&mut remote));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for (what, wall, w, unit) in [
        ("local disk", l, local_w, "files"),
        ("S3", s, remote_w, "objects"),
    ] {
        println!(
            "  end to end file → validate → enrich → parquet, {what:<10}: {:>10.0} rec/s  ({:.2}s, {:.1} MiB/s of Parquet; {:.1} MiB in {} {unit})",
            rate(a.rows, wall),
            wall.as_secs_f64(),
            mib(w.bytes) / wall.as_secs_f64(),
            mib(w.bytes),
            w.files
        );
    }
    println!(
        "  s3/local: records/s {:.2}, bytes written {:.2}",
        rate(a.rows, s) / rate(a.rows, l),
        remote_w.bytes as f64 / local_w.bytes.max(1) as f64
    );
    Ok(())
}

/// Writes the pipeline file and runs it once on `csv`: wall time, peak RSS.
fn run_one(
    exe: &Path,
    dir: &Path,
    csv: &Path,
    what: &str,
    p: &E2e,
) -> Result<(Duration, u64), String> {
    let file = dir.join(format!("{what}.toml"));
    std::fs::write(&file, e2e_pipeline(p)).map_err(|e| e.to_string())?;
    child_run(exe, &file, csv)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// The data files under a local table: `*.parquet`, nothing hidden.
fn local_table(root: &Path) -> Result<Written, String> {
    let mut w = Written::default();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ty = e.file_type().map_err(|e| e.to_string())?;
            if name.starts_with('.') {
                continue;
            }
            if ty.is_dir() {
                dirs.push(e.path());
            } else if name.ends_with(".parquet") {
                w.files += 1;
                w.bytes += e.metadata().map_err(|e| e.to_string())?.len();
            }
        }
    }
    Ok(w)
}

/// The bucket exists afterwards: created when missing, but only on an
/// overridden endpoint (an emulator); on AWS a missing bucket is an error.
async fn ensure_bucket(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    may_create: bool,
) -> Result<(), String> {
    let e = match c.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let missing = e.as_service_error().is_some_and(|s| s.is_not_found());
    if !missing {
        let ce = crate::s3::classify(&e);
        return Err(format!(
            "bucket {bucket}: {}: {}",
            ce.message,
            ce.hint(
                &crate::s3::S3Url {
                    bucket: bucket.into(),
                    prefix: String::new()
                },
                "--bucket"
            )
        ));
    }
    if !may_create {
        return Err(format!("bucket {bucket} does not exist (it is created only on an overridden endpoint); create it or fix --bucket"));
    }
    let mut req = c.create_bucket().bucket(bucket);
    // us-east-1 takes no location constraint; every other region needs one.
    if let Some(r) = c
        .config()
        .region()
        .map(|r| r.as_ref().to_string())
        .filter(|r| r != "us-east-1")
    {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(r.as_str()))
                .build(),
        );
    }
    req.send().await.map_err(|e| {
        format!(
            "cannot create bucket {bucket}: {}",
            crate::s3::classify(&e).message
        )
    })?;
    Ok(())
}

/// Every object under `prefix/`: key and size.
async fn list(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{prefix}/"))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot list s3://{bucket}/{prefix}: {}",
                    crate::s3::classify(&e).message
                )
            })?;
        out.extend(
            page.contents()
                .iter()
                .filter_map(|o| Some((o.key()?.to_string(), o.size().unwrap_or(0).max(0) as u64))),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if page.is_truncated() != Some(true) || token.is_none() {
            return Ok(out);
        }
    }
}

async fn remove(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    keys: impl Iterator<Item = String>,
) -> Result<(), String> {
    for k in keys {
        c.delete_object()
            .bucket(bucket)
            .key(&k)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot remove s3://{bucket}/{k}: {}",
                    crate::s3::classify(&e).message
                )
            })?;
    }
    Ok(())
}
