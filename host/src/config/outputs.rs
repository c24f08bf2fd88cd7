//! Where a pipeline writes: every sink destination, the DLQ and the local
//! checkpoint store's files. `sluice validate` refuses two of them on one
//! path or one inside the other (each sink's recovery would destroy the
//! other's committed data), and `sluice reset` removes exactly these.

use std::path::{Component, Path, PathBuf};

use super::error::ConfigError;
use super::load::Pipeline;
use super::model::SourceSpec;
use crate::s3::S3Url;

/// What a destination is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// One place the pipeline writes (or, for sources, reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Key path in the pipeline file (`sinks.lake.path`, `dlq.path`, `checkpoint.dir`).
    pub key: Vec<String>,
    /// As written (after interpolation and defaults).
    pub raw: String,
    pub kind: Kind,
    /// True for the checkpoint store's own files (several share one key).
    pub checkpoint: bool,
}

impl Destination {
    pub fn key_path(&self) -> String {
        self.key.join(".")
    }
    pub fn is_s3(&self) -> bool {
        self.raw.starts_with("s3://")
    }
}

/// The files a local checkpoint store keeps in its directory.
pub use crate::checkpoint::local::FILES as CHECKPOINT_FILES;

/// Every output of `p`, in file order: sinks, the DLQ, the checkpoint
/// store's files (local stores only; an `s3://` store is one destination).
pub fn destinations(p: &Pipeline) -> Vec<Destination> {
    let key = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (name, sk) in &p.spec.sinks {
        // A sink writing to a service (OpenSearch) has no path to compare.
        let Some(path) = sk.path() else { continue };
        let (raw, kind) = (path.to_string(), sk.destination_kind());
        out.push(Destination {
            key: key(&["sinks", name, "path"]),
            raw,
            kind,
            checkpoint: false,
        });
    }
    // A default DLQ lives in the checkpoint dir: `checkpoint.dir` decides
    // where it is, so that key answers for it.
    let has = |k: &[&str]| super::locate::has_key(&p.text, k);
    let dlq_key = if !has(&["dlq", "path"]) && has(&["checkpoint", "dir"]) {
        ["checkpoint", "dir"]
    } else {
        ["dlq", "path"]
    };
    out.push(Destination {
        key: key(&dlq_key),
        raw: p.spec.dlq.path.clone(),
        kind: Kind::File,
        checkpoint: false,
    });
    let dir = &p.spec.checkpoint.dir;
    if dir.starts_with("s3://") {
        out.push(Destination {
            key: key(&["checkpoint", "dir"]),
            raw: dir.clone(),
            kind: Kind::Dir,
            checkpoint: true,
        });
    } else {
        for f in CHECKPOINT_FILES {
            let raw = Path::new(dir).join(f).to_string_lossy().into_owned();
            out.push(Destination {
                key: key(&["checkpoint", "dir"]),
                raw,
                kind: Kind::File,
                checkpoint: true,
            });
        }
    }
    // File order, so "the second one" is the one a reader meets second;
    // defaults (not in the file) come first and the explicit key is blamed.
    let pos = |d: &Destination| {
        let k: Vec<&str> = d.key.iter().map(String::as_str).collect();
        super::locate::offset_of(&p.text, &k)
            .filter(|_| super::locate::has_key(&p.text, &k))
            .unwrap_or(0)
    };
    out.sort_by_key(|d| pos(d));
    out
}

/// Absolute, lexically normalised (`.` and `..` resolved), with symlinks of
/// the longest existing ancestor resolved, so two spellings of one place
/// compare equal.
pub fn resolve(raw: &str) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let joined = cwd.join(raw);
    let mut norm = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other),
        }
    }
    // Canonicalise the deepest part that exists; keep the rest as written.
    let mut existing = norm.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(n) => rest.push(n.to_owned()),
            None => break,
        }
        existing.pop();
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for n in rest.into_iter().rev() {
        out.push(n);
    }
    out
}

/// Two destinations on one path, or one inside the other: the later one
/// (in file order) is reported, naming the earlier.
pub fn overlaps(p: &Pipeline) -> Vec<ConfigError> {
    let dests: Vec<(Destination, PathBuf)> = destinations(p)
        .into_iter()
        .filter(|d| !d.is_s3())
        .map(|d| {
            let r = resolve(&d.raw);
            (d, r)
        })
        .collect();
    let inputs: Vec<(String, PathBuf)> = p
        .spec
        .sources
        .iter()
        .filter_map(|(n, s)| match s {
            SourceSpec::File(f) => Some((format!("sources.{n}.path"), resolve(&f.path))),
            _ => None,
        })
        .collect();
    let mut errors = Vec::new();
    let mut blamed = std::collections::BTreeSet::new();
    for (i, (b, bp)) in dests.iter().enumerate() {
        for (src, sp) in &inputs {
            if sp.starts_with(bp) && blamed.insert(b.key_path()) {
                let key: Vec<&str> = b.key.iter().map(String::as_str).collect();
                errors.push(p.error_at(
                    &key,
                    format!("{} would overwrite the input file {} ({src}); write the output somewhere else", b.raw, sp.display()),
                ));
            }
        }
        for (a, ap) in &dests[..i] {
            // The checkpoint store's files never collide with each other.
            if a.checkpoint && b.checkpoint {
                continue;
            }
            if (ap.starts_with(bp) || bp.starts_with(ap)) && blamed.insert(b.key_path()) {
                let how = if ap == bp {
                    "is the same path as"
                } else if bp.starts_with(ap) {
                    "is inside"
                } else {
                    "contains"
                };
                let what = if a.checkpoint {
                    format!("the checkpoint store's {}", a.raw)
                } else {
                    a.raw.clone()
                };
                let key: Vec<&str> = b.key.iter().map(String::as_str).collect();
                errors.push(p.error_at(
                    &key,
                    format!(
                        "{} {how} {} ({}); each sink, the DLQ and the checkpoint need their own place, \
                         or recovering one destroys the other's committed data: choose another path",
                        b.raw,
                        what,
                        a.key_path()
                    ),
                ));
            }
        }
    }
    errors.extend(s3_overlaps(p));
    errors
}

/// The same rule for `s3://` destinations: one bucket prefix inside
/// another (by whole path segments) is refused.
fn s3_overlaps(p: &Pipeline) -> Vec<ConfigError> {
    let dests: Vec<(Destination, S3Url)> =
        destinations(p).into_iter().filter_map(|d| S3Url::parse(&d.raw).ok().map(|u| (d, u))).collect();
    let mut errors = Vec::new();
    for (i, (b, bu)) in dests.iter().enumerate() {
        if let Some((a, au)) = dests[..i].iter().find(|(_, au)| au.contains(bu) || bu.contains(au)) {
            let how = if au == bu { "is the same location as" } else if au.contains(bu) { "is inside" } else { "contains" };
            let what = if a.checkpoint { format!("the checkpoint store {}", a.raw) } else { a.raw.clone() };
            let key: Vec<&str> = b.key.iter().map(String::as_str).collect();
            errors.push(p.error_at(
                &key,
                format!(
                    "{} {how} {what} ({}); each sink, the DLQ and the checkpoint need their own prefix, \
                     or recovering one touches the other's objects: choose another prefix",
                    b.raw,
                    a.key_path()
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::parse;

    fn pipeline(extra: &str) -> Pipeline {
        let t = format!(
            "[sources.a]\ntype = \"file\"\npath = \"in.csv\"\n\n[sinks.one]\ntype = \"file\"\ninputs = [\"a\"]\npath = \"out/one.ndjson\"\n{extra}"
        );
        parse(Path::new("p.toml"), &t, |_| None).unwrap()
    }

    #[test]
    fn distinct_paths_and_defaults_do_not_overlap() {
        assert!(overlaps(&pipeline("")).is_empty());
        let p = pipeline("[sinks.two]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \"out/two\"\n");
        assert!(overlaps(&p).is_empty(), "{:?}", overlaps(&p));
        // The default DLQ lives inside the default checkpoint dir, beside its files.
        let d = destinations(&p);
        assert!(d.iter().any(|d| d.raw == ".sluice/p/dlq.ndjson"), "{d:?}");
    }

    #[test]
    fn same_file_nested_dirs_dlq_and_inputs_are_refused() {
        let e = overlaps(&pipeline(
            "[sinks.two]\ntype = \"file\"\ninputs = [\"a\"]\npath = \"./out/../out/one.ndjson\"\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            (e[0].path.as_str(), e[0].line),
            ("sinks.two.path", Some(12)),
            "{}",
            e[0]
        );
        assert!(
            e[0].message.contains("same path") && e[0].message.contains("sinks.one.path"),
            "{}",
            e[0]
        );

        let e = overlaps(&pipeline(
            "[sinks.two]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \"out\"\n",
        ));
        assert_eq!(e[0].path, "sinks.two.path", "{}", e[0]);
        assert!(e[0].message.contains("contains"), "{}", e[0]);

        let e = overlaps(&pipeline("[dlq]\npath = \"out/one.ndjson\"\n"));
        assert_eq!(
            (e[0].path.as_str(), e[0].line),
            ("dlq.path", Some(10)),
            "{}",
            e[0]
        );

        let e = overlaps(&pipeline("[checkpoint]\ndir = \"out/one.ndjson/cp\"\n"));
        assert_eq!(e[0].path, "checkpoint.dir", "{}", e[0]);

        let e = overlaps(&pipeline(
            "[sinks.two]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \"s3://bkt/lake\"\n[checkpoint]\ndir = \"s3://bkt/lake/cp\"\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].path == "checkpoint.dir" && e[0].message.contains("is inside"), "{}", e[0]);
        let ok = overlaps(&pipeline(
            "[sinks.two]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \"s3://bkt/lake\"\n[checkpoint]\ndir = \"s3://bkt/lakes\"\n",
        ));
        assert!(ok.is_empty(), "{ok:?}");

        let e = overlaps(&pipeline(
            "[sinks.two]\ntype = \"parquet\"\ninputs = [\"a\"]\npath = \".\"\n",
        ));
        assert!(
            e.iter()
                .any(|e| e.path == "sinks.two.path" && e.message.contains("in.csv")),
            "{e:?}"
        );
    }
}
