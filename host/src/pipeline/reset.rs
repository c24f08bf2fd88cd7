//! `sluice reset` (and `run --from-scratch`): forget a pipeline's progress so
//! the next run starts from the beginning. Removes exactly what the pipeline
//! file declares — its checkpoint store's files, every sink destination and
//! the DLQ — after a confirmation, and nothing else: sinks refuse (or append
//! to) destinations holding output no checkpoint knows, so a fresh start
//! needs the outputs gone too.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{local::LocalStore, CheckpointStore};
use crate::config::outputs::{self, Destination};
use crate::config::{ConfigErrors, Pipeline};

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("nothing was removed: {0}")]
    Refused(String),
    #[error("cannot remove {path}: {source}; the reset is incomplete, remove it by hand and run `sluice reset` again")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

/// One thing to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: String,
    pub path: PathBuf,
    pub dir: bool,
}

/// How a removal is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// `--yes`.
    Yes,
    /// Ask on the terminal; refuse when stdin is not one.
    Ask,
}

/// What `reset` would remove: the declared local outputs that exist. S3
/// destinations and paths that would take more than the pipeline's own
/// output with them (the working directory, the pipeline file, an input)
/// are refused before anything is removed.
pub fn targets(p: &Pipeline) -> Result<Vec<Target>, ResetError> {
    let overlaps = outputs::overlaps(p);
    if !overlaps.is_empty() {
        return Err(ConfigErrors(overlaps).into());
    }
    let dests = outputs::destinations(p);
    let s3: Vec<&Destination> = dests.iter().filter(|d| d.is_s3()).collect();
    if !s3.is_empty() {
        let list: Vec<String> = s3
            .iter()
            .map(|d| format!("{} ({})", d.raw, d.key_path()))
            .collect();
        return Err(ResetError::Refused(format!(
            "reset cannot remove S3 outputs yet; remove {} yourself (e.g. `aws s3 rm --recursive URL`), \
             then run `sluice reset` again for the local ones, or point those keys elsewhere",
            list.join(", ")
        )));
    }
    let protected = protected_paths(p);
    let mut out = Vec::new();
    for d in dests {
        let path = outputs::resolve(&d.raw);
        if let Some(why) = protected
            .iter()
            .find_map(|(q, why)| q.starts_with(&path).then_some(why))
        {
            return Err(ResetError::Refused(format!(
                "{} ({}) contains {why}; reset removes only a pipeline's own output: give it a directory of its own",
                d.raw,
                d.key_path()
            )));
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) => out.push(Target {
                key: d.key_path(),
                path,
                dir: m.is_dir(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ResetError::Io {
                    path: path.display().to_string(),
                    source: e,
                })
            }
        }
    }
    Ok(out)
}

/// Places no reset may remove, with what they are.
fn protected_paths(p: &Pipeline) -> Vec<(PathBuf, String)> {
    let mut v = vec![
        (PathBuf::from("/"), "the file system root".to_string()),
        (outputs::resolve("."), "the working directory".to_string()),
        (
            outputs::resolve(&p.file.to_string_lossy()),
            format!("the pipeline file {}", p.file.display()),
        ),
    ];
    if let Some(h) = std::env::var_os("HOME") {
        v.push((
            outputs::resolve(&h.to_string_lossy()),
            "the home directory".into(),
        ));
    }
    for (name, s) in &p.spec.sources {
        if let crate::config::SourceSpec::File(f) = s {
            v.push((
                outputs::resolve(&f.path),
                format!("the input of sources.{name}"),
            ));
        }
    }
    for (name, st) in &p.spec.stages {
        v.push((
            outputs::resolve(&st.plugin),
            format!("the plugin of stages.{name}"),
        ));
    }
    v
}

/// Remove the pipeline's checkpoint and outputs. Holds the checkpoint lock
/// meanwhile, so a running pipeline is never reset under its feet. Returns
/// what was removed.
pub async fn reset(p: &Pipeline, confirm: Confirm) -> Result<Vec<Target>, ResetError> {
    let targets = targets(p)?;
    if targets.is_empty() {
        eprintln!(
            "pipeline {}: nothing to remove (no checkpoint, no output)",
            p.name
        );
        return Ok(targets);
    }
    let ckpt_dir = Path::new(&p.spec.checkpoint.dir);
    let _store = if ckpt_dir.is_dir() {
        let store = LocalStore::open(ckpt_dir)?;
        if let Some(cp) = store.load().await? {
            if cp.pipeline != p.name {
                return Err(ResetError::Refused(format!(
                    "the checkpoint in {} belongs to pipeline {:?}, not {:?}",
                    store.describe(),
                    cp.pipeline,
                    p.name
                )));
            }
        }
        Some(store)
    } else {
        None
    };
    eprintln!("pipeline {} ({}): reset removes", p.name, p.file.display());
    for t in &targets {
        let what = if t.dir {
            format!("directory ({} files)", count_files(&t.path))
        } else {
            "file".to_string()
        };
        eprintln!("  {:<24} {} [{what}]", t.key, t.path.display());
    }
    match confirm {
        Confirm::Yes => {}
        Confirm::Ask => {
            if !std::io::stdin().is_terminal() {
                return Err(ResetError::Refused(
                    "not confirmed; pass --yes to confirm without a terminal".into(),
                ));
            }
            eprint!("remove these? [y/N] ");
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                return Err(ResetError::Refused("not confirmed".into()));
            }
        }
    }
    for t in &targets {
        let r = if t.dir {
            std::fs::remove_dir_all(&t.path)
        } else {
            // With the file's start marker, if a run left one.
            crate::sink::file::remove_output(&t.path)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ResetError::Io {
                    path: t.path.display().to_string(),
                    source,
                })
            }
        }
    }
    // Opening the store may have created its lock file after the listing.
    for f in outputs::CHECKPOINT_FILES {
        let _ = std::fs::remove_file(ckpt_dir.join(f));
    }
    // The store's directory (and so the default `.sluice/<name>/`) goes
    // too once empty; a directory that holds anything else stays.
    let _ = std::fs::remove_dir(ckpt_dir);
    eprintln!(
        "pipeline {}: reset; the next run starts from the beginning",
        p.name
    );
    Ok(targets)
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::parse;

    fn pipeline(dir: &Path, extra: &str) -> Pipeline {
        let d = dir.display();
        let t = format!(
            "[checkpoint]\ndir = \"{d}/cp\"\n[dlq]\npath = \"{d}/dlq.ndjson\"\n[sources.a]\ntype = \"file\"\npath = \"{d}/in.csv\"\n\
             [sinks.lake]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \"{d}/lake\"\n{extra}"
        );
        parse(&dir.join("p.toml"), &t, |_| None).unwrap()
    }

    #[tokio::test]
    async fn removes_declared_outputs_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = pipeline(d.path(), "");
        for f in [
            "in.csv",
            "p.toml",
            "keep.txt",
            "dlq.ndjson",
            "cp/checkpoint.json",
            "cp/LOCK",
            "cp/mine.txt",
            "lake/x=1/part-1.parquet",
        ] {
            let f = d.path().join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(
                &f,
                br#"{"version":1,"pipeline":"p","epoch":1,"created":"","nodes":{}}"#,
            )
            .unwrap();
        }
        let removed = reset(&p, Confirm::Yes).await.unwrap();
        assert_eq!(removed.len(), 4, "{removed:?}"); // lake, dlq, checkpoint.json, LOCK
        for gone in ["dlq.ndjson", "cp/checkpoint.json", "cp/LOCK", "lake"] {
            assert!(!d.path().join(gone).exists(), "{gone} is still there");
        }
        for kept in ["in.csv", "p.toml", "keep.txt", "cp/mine.txt"] {
            assert!(d.path().join(kept).exists(), "{kept} was removed");
        }
        assert!(reset(&p, Confirm::Yes).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refuses_s3_a_foreign_checkpoint_and_outputs_holding_inputs() {
        let d = tempfile::tempdir().unwrap();
        let p = pipeline(
            d.path(),
            "[sinks.up]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \"s3://bucket/up\"\n",
        );
        let e = targets(&p).unwrap_err().to_string();
        assert!(
            e.contains("s3://bucket/up") && e.contains("nothing was removed"),
            "{e}"
        );

        let p = pipeline(d.path(), "");
        std::fs::create_dir_all(d.path().join("cp")).unwrap();
        std::fs::write(
            d.path().join("cp/checkpoint.json"),
            br#"{"version":1,"pipeline":"other","epoch":1,"created":"","nodes":{}}"#,
        )
        .unwrap();
        let e = reset(&p, Confirm::Yes).await.unwrap_err().to_string();
        assert!(e.contains("\"other\""), "{e}");
        assert!(d.path().join("cp/checkpoint.json").exists());

        let t = format!(
            "[sources.a]\ntype = \"file\"\npath = \"{0}/data/in.csv\"\n[sinks.lake]\ntype = \"file\"\ninputs = [\"a\"]\npath = \"{0}/o.ndjson\"\n[dlq]\npath = \"{0}/p.toml\"\n",
            d.path().display()
        );
        let p = parse(&d.path().join("p.toml"), &t, |_| None).unwrap();
        std::fs::write(d.path().join("p.toml"), "x").unwrap();
        let e = targets(&p).unwrap_err().to_string();
        assert!(e.contains("pipeline file"), "{e}");
    }
}
