//! Records out of a file, one line at a time and bounded: a line longer than
//! `max_record_bytes` is never held whole (only its first bytes are kept, for
//! the DLQ), and a CSV quote left open ends with its line unless the source
//! allows multi-line fields. So one broken row costs one DLQ entry, never
//! the rest of the file or the reader's memory.

use std::io::{self, BufRead};

/// How much of a record that cannot be parsed goes into its DLQ entry.
pub const DLQ_PREFIX_BYTES: usize = 1024;

/// Appends one physical line (without its `\n` or `\r\n`) to `buf`, keeping
/// `buf` at most `cap` bytes long; the rest of a longer line is consumed and
/// counted but not kept. Returns (bytes consumed, length of the line); 0
/// bytes consumed means the end of the input.
pub fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, cap: usize) -> io::Result<(u64, u64)> {
    let kept_from = buf.len();
    let (mut consumed, mut len) = (0u64, 0u64);
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        let (line, used, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&line[..line.len().min(room)]);
        len += line.len() as u64;
        consumed += used as u64;
        r.consume(used);
        if done {
            break;
        }
    }
    if buf.len() - kept_from == len as usize && buf.last() == Some(&b'\r') {
        buf.pop();
        len -= 1;
    }
    Ok((consumed, len))
}

/// What went wrong with one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad {
    pub code: &'static str,
    pub message: String,
}

pub fn too_large(size: u64, max: usize) -> Bad {
    Bad {
        code: "too_large",
        message: format!(
            "record of {size} bytes is larger than max_record_bytes ({max}); the DLQ keeps its first {} bytes",
            DLQ_PREFIX_BYTES.min(max + 1).min(size as usize)
        ),
    }
}

/// One CSV record after [`CsvRecords::next`]: where it starts and whether it
/// parsed (its fields are then in [`CsvRecords::fields`]).
#[derive(Debug)]
pub struct Next {
    /// 1-based physical line of the file the record starts on.
    pub line: u64,
    pub outcome: Result<(), Bad>,
}

/// CSV records (comma-separated, `"` quotes, `""` escapes, the `csv` crate's
/// dialect), line-oriented unless `multiline`.
pub struct CsvRecords<R> {
    r: R,
    max: usize,
    multiline: bool,
    core: csv_core::Reader,
    buf: Vec<u8>,
    out: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    /// The last record had no quote and no carriage return: its fields are
    /// the comma-separated pieces of `buf` itself (`ends` marks the commas),
    /// not unquoted copies in `out`.
    plain: bool,
    /// Bytes consumed since the reader was created.
    pub consumed: u64,
    /// Physical lines consumed, counting from the line number given at creation.
    pub line: u64,
}

impl<R: BufRead> CsvRecords<R> {
    /// `line`: how many lines come before the reader's first byte.
    pub fn new(r: R, max_record_bytes: usize, multiline: bool, line: u64) -> Self {
        Self {
            r,
            max: max_record_bytes,
            multiline,
            core: csv_core::Reader::new(),
            buf: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
            ends: Vec::with_capacity(64),
            nfields: 0,
            plain: false,
            consumed: 0,
            line,
        }
    }

    /// The next record, `None` at the end of the input. Empty lines are skipped.
    pub fn next(&mut self) -> io::Result<Option<Next>> {
        loop {
            self.buf.clear();
            self.nfields = 0;
            let first = self.line + 1;
            let (n, mut size) = read_line(&mut self.r, &mut self.buf, self.max + 1)?;
            if n == 0 {
                return Ok(None);
            }
            self.consumed += n;
            self.line += 1;
            if size == 0 {
                continue;
            }
            let done = |outcome| Ok(Some(Next { line: first, outcome }));
            if size > self.max as u64 {
                return done(Err(too_large(size, self.max)));
            }
            while open_quote(&self.buf) {
                if !self.multiline {
                    return done(Err(Bad {
                        code: "malformed",
                        message: "unterminated quoted field: the line ends inside quotes (set multiline = true on the source if quoted fields span lines)".into(),
                    }));
                }
                self.buf.push(b'\n');
                let (n, more) = read_line(&mut self.r, &mut self.buf, self.max + 1)?;
                if n == 0 {
                    return done(Err(Bad {
                        code: "malformed",
                        message: "unterminated quoted field at the end of the file".into(),
                    }));
                }
                self.consumed += n;
                self.line += 1;
                size += 1 + more;
                if size > self.max as u64 {
                    return done(Err(too_large(size, self.max)));
                }
            }
            return done(self.split());
        }
    }
}

impl<R> CsvRecords<R> {
    /// The record's text (for a bad record: its first bytes, at most
    /// `max_record_bytes + 1`); cut it to [`DLQ_PREFIX_BYTES`] for the DLQ.
    pub fn raw(&self) -> &[u8] {
        &self.buf
    }

    /// The bytes of a bad record worth keeping in the DLQ.
    pub fn dlq_raw(&self) -> &[u8] {
        &self.buf[..self.buf.len().min(DLQ_PREFIX_BYTES)]
    }

    pub fn len(&self) -> usize {
        self.nfields
    }

    /// The fields of the last good record, unquoted.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        // A plain record's field i starts after the comma at ends[i - 1].
        let (data, skip) = if self.plain { (&self.buf, 1) } else { (&self.out, 0) };
        (0..self.nfields).map(move |i| &data[if i == 0 { 0 } else { self.ends[i - 1] + skip }..self.ends[i]])
    }
}

impl<R: BufRead> CsvRecords<R> {
    fn split(&mut self) -> Result<(), Bad> {
        use csv_core::ReadRecordResult as R;
        // Most records quote nothing. Without a quote or a carriage return
        // the dialect's fields are exactly the text between commas, so the
        // parser and the copy into `out` are skipped (a third of a CSV
        // source's time, measured on the taxi file).
        self.plain = memchr::memchr2(b'"', b'\r', &self.buf).is_none();
        if self.plain {
            self.ends.clear();
            self.ends.extend(memchr::memchr_iter(b',', &self.buf));
            self.ends.push(self.buf.len());
            self.nfields = self.ends.len();
            return Ok(());
        }
        self.core.reset();
        self.out.clear();
        self.out.resize(self.buf.len() + 1, 0);
        self.ends.clear();
        self.ends.resize(memchr::memchr_iter(b',', &self.buf).count() + 2, 0);
        let (mut input, mut nout, mut nend) = (&self.buf[..], 0, 0);
        loop {
            let (res, nin, o, e) = self.core.read_record(input, &mut self.out[nout..], &mut self.ends[nend..]);
            input = &input[nin..];
            nout += o;
            nend += e;
            match res {
                R::InputEmpty => continue, // input now empty: the next call ends the record
                R::OutputFull => self.out.resize(self.out.len() * 2 + 1, 0),
                R::OutputEndsFull => self.ends.resize(self.ends.len() * 2 + 1, 0),
                R::Record if input.is_empty() => break,
                R::Record => {
                    return Err(Bad {
                        code: "malformed",
                        message: "a carriage return inside an unquoted field".into(),
                    });
                }
                R::End => break,
            }
        }
        self.nfields = nend;
        Ok(())
    }
}

/// Whether a record's text ends inside a quoted field, by the csv crate's
/// rules: a quote opens a quoted field only at the start of a field, `""`
/// inside one is an escaped quote, and quotes elsewhere are plain text.
fn open_quote(rec: &[u8]) -> bool {
    if memchr::memchr(b'"', rec).is_none() {
        return false;
    }
    let (mut quoted, mut at_start, mut i) = (false, true, 0);
    while i < rec.len() {
        let b = rec[i];
        if quoted {
            if b == b'"' {
                if rec.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                quoted = false;
            }
            at_start = false;
        } else if b == b',' {
            at_start = true;
        } else {
            quoted = b == b'"' && at_start;
            at_start = false;
        }
        i += 1;
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str, max: usize, multiline: bool) -> Vec<(u64, Result<Vec<String>, Bad>, String)> {
        let mut r = CsvRecords::new(text.as_bytes(), max, multiline, 0);
        let mut out = Vec::new();
        while let Some(n) = r.next().unwrap() {
            let fields = n.outcome.map(|()| r.fields().map(|f| String::from_utf8_lossy(f).into_owned()).collect());
            out.push((n.line, fields, String::from_utf8_lossy(r.dlq_raw()).into_owned()));
        }
        assert_eq!(r.consumed, text.len() as u64);
        out
    }

    #[test]
    fn fields_quotes_and_line_numbers() {
        let got = records("a,b,c\r\n\n\"x,1\",\"say \"\"hi\"\"\",\nq\"q,,\"\"\n", 100, false);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1.as_ref().unwrap(), &["a", "b", "c"]);
        assert_eq!(got[1].0, 3, "the empty line 2 is skipped but counted");
        assert_eq!(got[1].1.as_ref().unwrap(), &["x,1", "say \"hi\"", ""]);
        assert_eq!(got[2].1.as_ref().unwrap(), &["q\"q", "", ""]);
    }

    #[test]
    fn unquoted_records_split_as_the_csv_crate_does() {
        // The no-quote shortcut must agree with the parser on everything it takes.
        let lines = ["a", ",", ",,", "a,,b", " x , y ", "é,ü,", "1.5,-2,", "tab\there,x"];
        for line in lines {
            let got = records(&format!("{line}\n"), 100, false);
            let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
            let want: Vec<String> = r.records().next().unwrap().unwrap().iter().map(str::to_string).collect();
            assert_eq!(got[0].1.as_ref().unwrap(), &want, "{line:?}");
        }
    }

    #[test]
    fn a_stray_quote_costs_one_line() {
        let got = records("a,b\n1,\"oops\n2,x\n3,y", 100, false);
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].0, 2);
        let bad = got[1].1.as_ref().unwrap_err();
        assert_eq!(bad.code, "malformed");
        assert!(bad.message.contains("unterminated quoted field"), "{}", bad.message);
        assert_eq!(got[1].2, "1,\"oops");
        assert_eq!(got[2].1.as_ref().unwrap(), &["2", "x"]);
        assert_eq!((got[3].0, got[3].1.as_ref().unwrap().clone()), (4, vec!["3".to_string(), "y".to_string()]));
    }

    #[test]
    fn multiline_fields_only_when_asked() {
        let got = records("1,\"two\nlines\",z\n2,b,c\n", 100, true);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.as_ref().unwrap(), &["1", "two\nlines", "z"]);
        assert_eq!(got[1].0, 3);
        let got = records("1,\"never closed\n2,b\n", 100, true);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.as_ref().unwrap_err().message.contains("end of the file"));
    }

    #[test]
    fn records_over_the_limit_keep_size_and_prefix_only() {
        let long = "x".repeat(5000);
        let text = format!("a,b\n1,{long}\n2,c\n");
        let got = records(&text, 1000, false);
        assert_eq!(got.len(), 3);
        let bad = got[1].1.as_ref().unwrap_err();
        assert_eq!(bad.code, "too_large");
        assert!(bad.message.contains("5002 bytes"), "{}", bad.message);
        assert_eq!(got[1].2.len(), DLQ_PREFIX_BYTES.min(1001));
        assert_eq!(got[2].1.as_ref().unwrap(), &["2", "c"]);
        // A multi-line record that grows past the limit is cut at that line.
        let text = format!("1,\"{long}\n{long}\"\n2,c\n");
        let got = records(&text, 6000, true);
        assert_eq!(got[0].1.as_ref().unwrap_err().code, "too_large");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn read_line_is_bounded() {
        let text = format!("{}\r\nnext\n", "y".repeat(10_000));
        let mut r = io::BufReader::with_capacity(64, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 100).unwrap(), (10_002, 10_001));
        assert_eq!(buf.len(), 100);
        buf.clear();
        assert_eq!(read_line(&mut r, &mut buf, 100).unwrap(), (5, 4));
        assert_eq!(buf, b"next");
        buf.clear();
        assert_eq!(read_line(&mut r, &mut buf, 100).unwrap(), (0, 0));
    }
}
