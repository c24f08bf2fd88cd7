//! Synthetic NYC taxi trips (`sluice gen taxi`, the generator source).
//!
//! Rows are a pure function of (seed, index): a generator source can resume
//! at any index, and a test can recompute what any row should have been.
//! A `bad_fraction` of rows carries exactly one defect each, and
//! [`Row::expected_code`] says which rejection code it must get.

mod format;
mod rng;
mod row;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use format::CSV_HEADER;
pub use row::{haversine_km, row, Fault, Field, Precomputed, Row, CODES, FIELD_NAMES};

/// The CSV columns, in header order.
pub const CSV_COLUMNS: [&str; 14] = FIELD_NAMES;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenOptions {
    pub rows: u64,
    pub seed: u64,
    /// Share of rows with a defect, 0.0–1.0.
    pub bad_fraction: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad_fraction must be between 0 and 1, got {0}")]
    BadFraction(f64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenReport {
    pub rows: u64,
    /// Bad rows per expected rejection code.
    pub bad: BTreeMap<&'static str, u64>,
    /// Bytes of the data file.
    pub bytes: u64,
}

impl GenReport {
    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }
}

/// Writes `opts.rows` rows to `path`: CSV (with header) when it ends in
/// `.csv`, NDJSON otherwise. With `labels`, also writes one NDJSON line per
/// row: `{"line": n, "index": i, "id": "...", "code": "..."|null}` where
/// `line` is the row's 1-based physical line in the data file (the CSV header
/// is line 1) and `code` the rejection it must get.
pub fn write_file(opts: &GenOptions, path: &Path, labels: Option<&Path>) -> Result<GenReport, GenError> {
    if !(0.0..=1.0).contains(&opts.bad_fraction) {
        return Err(GenError::BadFraction(opts.bad_fraction));
    }
    let csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> GenError + '_ {
        move |source| GenError::Io { path: p.to_path_buf(), source }
    }
    let mut data = Chunked::create(path).map_err(io(path))?;
    let mut label_out = match labels {
        Some(p) => Some((Chunked::create(p).map_err(io(p))?, p)),
        None => None,
    };

    let mut report = GenReport { rows: opts.rows, ..Default::default() };
    let mut line = 1u64;
    if csv {
        data.buf.extend_from_slice(CSV_HEADER.as_bytes());
        data.buf.push(b'\n');
        line += 1;
    }
    for i in 0..opts.rows {
        let r = row(opts, i);
        if csv {
            r.write_csv(&mut data.buf);
        } else {
            r.write_json(&mut data.buf);
        }
        data.buf.push(b'\n');
        let code = r.expected_code();
        if let Some(c) = code {
            *report.bad.entry(c).or_default() += 1;
        }
        if let Some((l, _)) = label_out.as_mut() {
            write_label(&mut l.buf, line, &r, code);
        }
        line += 1;
        data.maybe_flush().map_err(io(path))?;
        if let Some((l, p)) = label_out.as_mut() {
            l.maybe_flush().map_err(io(p))?;
        }
    }
    report.bytes = data.finish().map_err(io(path))?;
    if let Some((l, p)) = label_out {
        l.finish().map_err(io(p))?;
    }
    Ok(report)
}

fn write_label(out: &mut Vec<u8>, line: u64, r: &Row, code: Option<&str>) {
    out.extend_from_slice(b"{\"line\":");
    format::write_uint(out, line);
    out.extend_from_slice(b",\"index\":");
    format::write_uint(out, r.index);
    out.extend_from_slice(b",\"id\":\"");
    format::write_id(out, r.index);
    out.extend_from_slice(b"\",\"code\":");
    match code {
        Some(c) => {
            out.push(b'"');
            out.extend_from_slice(c.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

/// A file written in large chunks from an in-memory buffer (cheaper than a
/// BufWriter call per field).
struct Chunked {
    file: BufWriter<File>,
    buf: Vec<u8>,
    bytes: u64,
}

const CHUNK: usize = 1 << 20;

impl Chunked {
    fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self { file: BufWriter::with_capacity(0, File::create(path)?), buf: Vec::with_capacity(CHUNK + 4096), bytes: 0 })
    }
    fn maybe_flush(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.file.write_all(&self.buf)?;
            self.bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
    fn finish(mut self) -> std::io::Result<u64> {
        self.file.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.file.flush()?;
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests;
