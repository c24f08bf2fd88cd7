//! File names: `part-{generation}-{epoch:08}-{n:04}.{codec}.parquet`.
//!
//! A generation is 16 hex digits: the start time in Unix milliseconds (12
//! digits, so names sort by run) and 4 random ones (two sinks starting in the
//! same millisecond on one table still differ).

use super::config::Compression;

const GENERATION_LEN: usize = 16;

pub fn new_generation() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    format!("{:012x}{:04x}", ms & 0xffff_ffff_ffff, rand::random::<u16>())
}

pub fn file_name(generation: &str, epoch: u64, n: u32, compression: Compression) -> String {
    match compression.file_infix() {
        Some(codec) => format!("part-{generation}-{epoch:08}-{n:04}.{codec}.parquet"),
        None => format!("part-{generation}-{epoch:08}-{n:04}.parquet"),
    }
}

/// The key of a file's chunk written in `epoch` by `writer` (one per file
/// and epoch: a file's writer is closed into a chunk at each checkpoint). It
/// starts like the file's name, so it carries the generation; it ends with
/// the writing sink's random id because two processes can write the same
/// generation's files: a new owner continues the open files of the
/// checkpoint it took over, while the former owner, paused past its lease,
/// may still finish a chunk when it resumes. Chunks are plain objects
/// (readable, so not fenced like commits), and without the id that late
/// write would replace the new owner's chunk of the same epoch, which the
/// new owner later joins into a visible file.
pub fn chunk_key(file_key: &str, epoch: u64, writer: &str) -> String {
    format!("{file_key}.chunk-{epoch:08}-{writer}")
}

/// A sink's writer id (see [`chunk_key`]).
pub fn new_writer_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The generation of a file key (`dir/part-{generation}-...`); `None` for
/// names of other writers and of versions before generations
/// (`part-{epoch:08}-{n:04}...`).
pub fn generation_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let g = name.strip_prefix("part-")?.split('-').next()?;
    (g.len() == GENERATION_LEN && g.bytes().all(|b| b.is_ascii_hexdigit())).then_some(g)
}

/// Which `staged` keys (uploads and chunks, table-relative) no checkpoint
/// will commit, for a sink writing `generation` after its recovery committed
/// the last token: its own generation's (except `keep`), those of
/// generations that never prepared (not in `marked`: no token can name
/// them), and those named before generations existed. Also how many were
/// left alone: staged objects of other marked generations, which another
/// run's checkpoint may still commit. Shared by the Parquet sink and the
/// DLQ in S3, which name their objects alike.
pub fn stale(staged: Vec<String>, keep: &[&str], generation: &str, marked: &[String]) -> (Vec<String>, usize) {
    let (mut stale, mut left) = (Vec::new(), 0usize);
    // Markers are plain objects, never staged; skipped should one be listed.
    for key in staged.into_iter().filter(|k| !keep.contains(&k.as_str()) && !k.starts_with(super::backend::MARKERS)) {
        match generation_of(&key) {
            Some(g) if g != generation && marked.iter().any(|m| m == g) => left += 1,
            _ => stale.push(key),
        }
    }
    (stale, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_generation() {
        let g = new_generation();
        assert_eq!(g.len(), GENERATION_LEN);
        let name = file_name(&g, 3, 7, Compression::Snappy);
        assert_eq!(name, format!("part-{g}-00000003-0007.snappy.parquet"));
        assert_eq!(generation_of(&format!("year=2016/{name}")), Some(g.as_str()));
        let chunk = chunk_key(&format!("year=2016/{name}"), 9, &new_writer_id());
        assert_eq!(generation_of(&chunk), Some(g.as_str()));
        assert!(chunk.starts_with(&format!("year=2016/{name}.chunk-00000009-")), "{chunk}");
        assert_eq!(generation_of("part-00000001-0000.snappy.parquet"), None, "names before generations");
    }
}
