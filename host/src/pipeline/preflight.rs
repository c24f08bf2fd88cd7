//! The checks `sluice run` would otherwise meet only when it starts its
//! sinks, DLQ, checkpoint store and admin endpoint — done up front, for
//! `validate` and `run` alike, without creating a file or starting a server,
//! so that what `validate` accepts, `run` can start.

use std::path::Path;

use crate::checkpoint::{local, s3::S3Url};
use crate::config::outputs::{self, Kind};
use crate::config::{ConfigError, Pipeline};
use crate::sink::SpecProblem;

/// Every problem with the pipeline's outputs, state and admin endpoint.
pub fn check(p: &Pipeline) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (name, sk) in &p.spec.sinks {
        for problem in sk.check() {
            errors.push(match problem {
                SpecProblem::Path(e) => p.error_at(&["sinks", name, "path"], e),
                SpecProblem::Config { key, message } => {
                    // The key itself when the file sets it (a dotted key: its
                    // deepest part the file sets); else the sink's table.
                    let mut path = vec!["sinks", name.as_str()];
                    path.extend(key.into_iter().flat_map(|k| k.split('.')));
                    while path.len() > 2 && !crate::config::locate::has_key(&p.text, &path) {
                        path.pop();
                    }
                    p.error_at(&path, message)
                }
            });
        }
    }
    if let Err((key, e)) = crate::sink::dlq::check(&p.spec.dlq) {
        errors.push(p.error_at(&["dlq", key], e));
    }
    if !errors.is_empty() {
        return errors;
    }
    // Each local destination must be creatable where it is declared.
    let mut seen_ckpt = false;
    for d in outputs::destinations(p) {
        if d.is_s3() {
            continue;
        }
        let key: Vec<&str> = d.key.iter().map(String::as_str).collect();
        let (path, kind) = if d.checkpoint {
            // The store's files share one key: check its directory once.
            if std::mem::replace(&mut seen_ckpt, true) {
                continue;
            }
            (p.spec.checkpoint.dir.clone(), Kind::Dir)
        } else {
            (d.raw.clone(), d.kind)
        };
        if let Err(e) = creatable(Path::new(&path), kind) {
            errors.push(p.error_at(&key, e));
        }
    }
    errors.extend(outputs::overlaps(p));
    errors.extend(checkpoint_store(p));
    if let Some(a) = &p.spec.admin {
        // Port 0 always binds; otherwise find out now whether it is free
        // (bound and released at once: nothing listens).
        if a.listen.0.port() != 0 {
            if let Err(e) = std::net::TcpListener::bind(a.listen.0) {
                errors.push(p.error_at(
                    &["admin", "listen"],
                    format!(
                        "cannot listen on {}: {e}; pick a free port (or 0 for any)",
                        a.listen.0
                    ),
                ));
            }
        }
    }
    errors
}

/// Whether `path` exists as `kind` or can be created: the nearest existing
/// ancestor is a writable directory.
fn creatable(path: &Path, kind: Kind) -> Result<(), String> {
    match (std::fs::metadata(path), kind) {
        (Ok(m), Kind::File) if m.is_dir() => {
            return Err(format!(
                "{} is a directory; name a file (e.g. {}/records.ndjson)",
                path.display(),
                path.display()
            ))
        }
        (Ok(m), Kind::Dir) if !m.is_dir() => {
            return Err(format!(
                "{} is a file, not a directory; name a directory",
                path.display()
            ))
        }
        (Ok(_), _) => return writable(path),
        (Err(_), _) => {}
    }
    let mut ancestor = path.parent();
    while let Some(a) = ancestor {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if let Ok(m) = std::fs::metadata(a) {
            if !m.is_dir() {
                return Err(format!(
                    "{} cannot be created: {} is a file, not a directory",
                    path.display(),
                    a.display()
                ));
            }
            return writable(a).map_err(|e| format!("{} cannot be created: {e}", path.display()));
        }
        ancestor = if a == Path::new(".") {
            None
        } else {
            a.parent()
        };
    }
    Ok(())
}

fn writable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} is not writable by this user ({})",
            path.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// What opening the checkpoint store would refuse: a malformed `s3://` URL;
/// a local store locked by another process, unreadable, or holding another
/// pipeline's checkpoint.
fn checkpoint_store(p: &Pipeline) -> Vec<ConfigError> {
    let dir = &p.spec.checkpoint.dir;
    let at = |m: String| vec![p.error_at(&["checkpoint", "dir"], m)];
    if dir.starts_with("s3://") {
        return S3Url::parse(dir).err().map(&at).unwrap_or_default();
    }
    if dir.contains("://") {
        return at(format!(
            "{dir}: write a local directory or s3://bucket/prefix"
        ));
    }
    match local::probe(Path::new(dir)) {
        Ok(Some(cp)) if cp.pipeline != p.name => at(format!(
            "{dir} holds the checkpoint of pipeline {:?}, not {:?}; use another checkpoint dir \
             (or `sluice reset` that pipeline)",
            cp.pipeline, p.name
        )),
        Ok(_) => vec![],
        Err(e) => at(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatable_refuses_files_in_the_way_and_kind_mismatches() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(creatable(&d.path().join("new/deeper/x.ndjson"), Kind::File).is_ok());
        assert!(creatable(&file.join("x.ndjson"), Kind::File)
            .unwrap_err()
            .contains("is a file"));
        assert!(creatable(&file, Kind::Dir)
            .unwrap_err()
            .contains("not a directory"));
        assert!(creatable(d.path(), Kind::File)
            .unwrap_err()
            .contains("is a directory"));
        assert!(creatable(Path::new("relative/x"), Kind::File).is_ok());
        assert!(
            !d.path().join("new").exists(),
            "a check created a directory"
        );
    }
}
