//! Kinesis records → batches: KPL de-aggregation, the resume skip inside an
//! aggregate, metadata, batch limits, and dead letters for corrupt aggregates.
//! Runs in each shard's reader task, so the work spreads over the shards.

use std::sync::Arc;

use aws_sdk_kinesis::types::Record;
use compact_str::CompactString;

use super::kpl;
use super::position::{cmp_seq, ShardPosition};
use crate::batch::{Batch, BatchData, JsonRecords, Origin, RecordMeta};
use crate::dead_letter::DeadLetter;

/// DLQ code of a record that claims to be a KPL aggregate and is not.
pub const KPL_CORRUPT: &str = "kpl_corrupt";

/// A unit the merge task emits, with the shard position after it.
#[derive(Debug)]
pub enum Piece {
    Data(Batch),
    Dead(Vec<DeadLetter>),
}

#[derive(Debug)]
pub struct Shaper {
    origin: Arc<Origin>,
    /// `sources.NAME`, the `stage` of dead letters.
    node: String,
    max_records: usize,
    max_bytes: usize,
    /// Resuming inside an aggregate: sub-records of this sequence number up
    /// to this sub were emitted before the checkpoint.
    skip: Option<(String, u32)>,
    /// `kpl_hash_range_filter`: the shard's hash-key range; sub-records whose
    /// hash key lies outside it are dropped (see `kpl::hash_key`).
    hash_range: Option<(u128, u128)>,
}

/// Batch being filled.
struct Open {
    json: JsonRecords,
    meta: Vec<RecordMeta>,
    end: Option<ShardPosition>,
}

impl Open {
    fn new() -> Self {
        Open { json: JsonRecords::with_capacity(64, 16 << 10), meta: Vec::new(), end: None }
    }
}

impl Shaper {
    pub fn new(origin: Arc<Origin>, node: String, max_records: usize, max_bytes: usize, skip: Option<(String, u32)>) -> Self {
        Self { origin, node, max_records: max_records.max(1), max_bytes: max_bytes.max(1), skip, hash_range: None }
    }

    /// Drops KPL sub-records outside `range` (inclusive), as the KCL's
    /// `AggregatorUtil.deaggregate(records, startingHashKey, endingHashKey)`:
    /// the KPL re-sends a sub-record that a stale shard map put in the wrong
    /// shard (its `Retrier::succeed_if_correct_shard`), so the copy in the
    /// wrong shard is a duplicate. Wrong for aggregators that do not re-send.
    pub fn with_hash_range(mut self, range: Option<(u128, u128)>) -> Self {
        self.hash_range = range;
        self
    }

    /// A dead letter that is not a record: a note about the shard (`code`,
    /// `message`) at sequence number `seq`.
    pub fn marker(&self, code: &str, message: &str, seq: &str) -> Piece {
        let meta = RecordMeta { seq: seq.into(), sub: 0, key: None, arrival_ms: None };
        let note = serde_json::json!({ "shard": &*self.origin.partition, "position": seq, "note": code });
        Piece::Dead(vec![DeadLetter::unparsed(&self.node, &self.origin, meta, note.to_string().into_bytes(), code, message)])
    }

    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// Records of one GetRecords response or SubscribeToShard event, in order.
    pub fn shape(&mut self, records: &[Record]) -> Vec<(Piece, ShardPosition)> {
        let mut out = Vec::new();
        let mut open = Open::new();
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut dead_end: Option<ShardPosition> = None;
        for r in records {
            let seq = r.sequence_number();
            let data = r.data().as_ref();
            let arrival_ms = r.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok());
            let key = r.partition_key().map(CompactString::from);
            let skip_through = self.skip_for(seq);
            if !kpl::is_aggregated(data) {
                if skip_through.is_some() {
                    continue; // a plain record has only sub 0, emitted before the checkpoint
                }
                let meta = RecordMeta { seq: seq.into(), sub: 0, key, arrival_ms };
                self.flush_dead(&mut out, &mut dead, &mut dead_end);
                self.push(&mut out, &mut open, meta, data, ShardPosition { seq: seq.to_string(), sub: 0, whole: true });
                continue;
            }
            match kpl::deaggregate(data) {
                Ok(mut subs) => {
                    if let Some((lo, hi)) = self.hash_range {
                        let before = subs.len();
                        subs.retain(|u| kpl::hash_key(u).is_none_or(|h| (lo..=hi).contains(&h)));
                        if subs.len() < before {
                            let dropped = before - subs.len();
                            tracing::debug!(partition = %self.origin.partition, seq, dropped, "KPL sub-records outside the shard's hash-key range dropped");
                            ::metrics::counter!("sluice_kinesis_kpl_filtered_total", "source" => self.origin.source.to_string(), "shard" => self.origin.partition.to_string())
                                .increment(dropped as u64);
                        }
                    }
                    // The position is whole after the last sub-record kept.
                    let last = subs.last().map_or(0, |u| u.sub);
                    for u in subs {
                        if skip_through.is_some_and(|s| u.sub <= s) {
                            continue;
                        }
                        let meta = RecordMeta { seq: seq.into(), sub: u.sub, key: Some(u.partition_key.into()), arrival_ms };
                        self.flush_dead(&mut out, &mut dead, &mut dead_end);
                        let end = ShardPosition { seq: seq.to_string(), sub: u.sub, whole: u.sub == last };
                        self.push(&mut out, &mut open, meta, &u.data, end);
                    }
                }
                Err(e) => {
                    if skip_through.is_some() {
                        continue; // already dead-lettered before the checkpoint
                    }
                    self.flush_open(&mut out, &mut open);
                    let meta = RecordMeta { seq: seq.into(), sub: 0, key, arrival_ms };
                    tracing::warn!(partition = %self.origin.partition, seq, error = %e, "corrupt KPL aggregate sent to the DLQ");
                    dead.push(DeadLetter::unparsed(&self.node, &self.origin, meta, data.to_vec(), KPL_CORRUPT, e.to_string()));
                    dead_end = Some(ShardPosition { seq: seq.to_string(), sub: 0, whole: true });
                }
            }
        }
        self.flush_dead(&mut out, &mut dead, &mut dead_end);
        self.flush_open(&mut out, &mut open);
        out
    }

    /// The sub-records to skip in record `seq`; clears the skip once past it.
    fn skip_for(&mut self, seq: &str) -> Option<u32> {
        let (s, sub) = self.skip.as_ref()?;
        match cmp_seq(seq, s) {
            std::cmp::Ordering::Equal => Some(*sub),
            std::cmp::Ordering::Less => Some(u32::MAX), // before the resume point: never expected, never re-emitted
            std::cmp::Ordering::Greater => {
                self.skip = None;
                None
            }
        }
    }

    fn push(&self, out: &mut Vec<(Piece, ShardPosition)>, open: &mut Open, meta: RecordMeta, data: &[u8], end: ShardPosition) {
        open.json.push(data);
        open.meta.push(meta);
        open.end = Some(end);
        if open.meta.len() >= self.max_records || open.json.buf.len() >= self.max_bytes {
            self.flush_open(out, open);
        }
    }

    fn flush_open(&self, out: &mut Vec<(Piece, ShardPosition)>, open: &mut Open) {
        if open.meta.is_empty() {
            return;
        }
        let o = std::mem::replace(open, Open::new());
        let batch = Batch { origin: self.origin.clone(), meta: o.meta, data: BatchData::Json(o.json) };
        out.push((Piece::Data(batch), o.end.expect("a non-empty batch has an end")));
    }

    fn flush_dead(&self, out: &mut Vec<(Piece, ShardPosition)>, dead: &mut Vec<DeadLetter>, end: &mut Option<ShardPosition>) {
        if dead.is_empty() {
            return;
        }
        out.push((Piece::Dead(std::mem::take(dead)), end.take().expect("dead letters have an end")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::{Blob, DateTime};

    fn rec(seq: &str, key: &str, data: &[u8]) -> Record {
        Record::builder()
            .sequence_number(seq)
            .partition_key(key)
            .data(Blob::new(data))
            .approximate_arrival_timestamp(DateTime::from_millis(1_000))
            .build()
            .unwrap()
    }

    fn shaper(max: usize, skip: Option<(String, u32)>) -> Shaper {
        let origin = Arc::new(Origin { source: "k".into(), partition: "shardId-0".into() });
        Shaper::new(origin, "sources.k".into(), max, 1 << 20, skip)
    }

    fn aggregate(items: &[(&str, &str)]) -> Vec<u8> {
        let mut a = kpl::Aggregator::new(1 << 20);
        for (k, d) in items {
            assert!(a.push(k, d.as_bytes()));
        }
        a.finish().unwrap().data
    }

    fn flat(pieces: &[(Piece, ShardPosition)]) -> Vec<(String, u32, Option<String>, String)> {
        let mut v = Vec::new();
        for (p, _) in pieces {
            if let Piece::Data(b) = p {
                let BatchData::Json(j) = &b.data else { panic!() };
                for (m, d) in b.meta.iter().zip(j.iter()) {
                    v.push((m.seq.to_string(), m.sub, m.key.as_ref().map(|k| k.to_string()), String::from_utf8(d.to_vec()).unwrap()));
                }
            }
        }
        v
    }

    #[test]
    fn plain_and_aggregated_records() {
        let agg = aggregate(&[("a", "{\"i\":1}"), ("b", "{\"i\":2}"), ("c", "{\"i\":3}")]);
        let records = vec![rec("10", "x", b"{\"i\":0}"), rec("11", "a", &agg), rec("12", "y", b"{\"i\":4}")];
        let pieces = shaper(2, None).shape(&records);
        let got = flat(&pieces);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], ("10".into(), 0, Some("x".into()), "{\"i\":0}".into()));
        assert_eq!(got[2], ("11".into(), 1, Some("b".into()), "{\"i\":2}".into()));
        assert_eq!(got[4], ("12".into(), 0, Some("y".into()), "{\"i\":4}".into()));
        // Batches of at most 2, each ending at its last record.
        let ends: Vec<_> = pieces.iter().map(|(_, e)| (e.seq.as_str(), e.sub, e.whole)).collect();
        assert_eq!(ends, vec![("11", 0, false), ("11", 2, true), ("12", 0, true)]);
        let Piece::Data(b) = &pieces[0].0 else { panic!() };
        assert_eq!(b.meta[0].arrival_ms, Some(1_000));
    }

    #[test]
    fn resume_inside_an_aggregate_skips_emitted_sub_records() {
        let agg = aggregate(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let records = vec![rec("11", "a", &agg), rec("12", "y", b"4")];
        let got = flat(&shaper(100, Some(("11".into(), 1))).shape(&records));
        let subs: Vec<_> = got.iter().map(|g| (g.0.as_str(), g.1)).collect();
        assert_eq!(subs, vec![("11", 2), ("12", 0)]);
    }

    /// Issue 8, item 2. An aggregate that straddles a split: its sub-records'
    /// hash keys fall on both sides of the shard's range. Unfiltered (the
    /// default) every sub-record is kept — right for aggregators that never
    /// re-send (aws-kinesis-agg), and the KPL's re-sends arrive twice.
    /// Filtered, only those in range are kept — right for the KPL, which
    /// re-sends the others to their shard (`Retrier::succeed_if_correct_shard`).
    #[test]
    fn hash_range_filter_keeps_only_sub_records_of_the_shard() {
        let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
        let items: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "{}")).collect();
        let lower = (0u128, u128::MAX / 2);
        let hash = |k: &str| kpl::hash_key(&kpl::UserRecord { sub: 0, partition_key: k.into(), explicit_hash_key: None, data: vec![] }).unwrap();
        let inside: Vec<&str> = keys.iter().map(String::as_str).filter(|k| hash(k) <= lower.1).collect();
        assert!(!inside.is_empty() && inside.len() < keys.len(), "the aggregate straddles the split");
        let records = vec![rec("11", "key-0", &aggregate(&items)), rec("12", "y", b"{}")];

        let all = flat(&shaper(100, None).shape(&records));
        assert_eq!(all.len(), keys.len() + 1, "unfiltered: every sub-record");

        let pieces = shaper(100, None).with_hash_range(Some(lower)).shape(&records);
        let got = flat(&pieces);
        let kept: Vec<&str> = got.iter().filter(|g| g.0 == "11").map(|g| g.2.as_deref().unwrap()).collect();
        assert_eq!(kept, inside, "filtered: the sub-records whose MD5 hash key is in range, in order");
        assert_eq!(got.last().unwrap().0, "12", "plain records are never filtered");

        // The aggregate's position is whole after its last kept sub-record.
        let mut small = shaper(1, None).with_hash_range(Some(lower));
        let ends: Vec<ShardPosition> = small.shape(&records[..1]).into_iter().map(|(_, e)| e).collect();
        assert!(ends.last().unwrap().whole, "{ends:?}");
    }

    #[test]
    fn corrupt_aggregate_becomes_a_dead_letter_in_order() {
        let mut bad = aggregate(&[("a", "1"), ("b", "2")]);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let records = vec![rec("10", "x", b"{}"), rec("11", "a", &bad), rec("12", "y", b"{}")];
        let pieces = shaper(100, None).shape(&records);
        assert_eq!(pieces.len(), 3);
        assert!(matches!(pieces[0].0, Piece::Data(_)));
        let Piece::Dead(d) = &pieces[1].0 else { panic!("expected dead letters") };
        assert_eq!(pieces[1].1, ShardPosition { seq: "11".into(), sub: 0, whole: true });
        assert_eq!(d[0].code, KPL_CORRUPT);
        assert_eq!(&*d[0].node, "sources.k");
        assert_eq!(d[0].meta.seq, "11");
        assert!(d[0].message.contains("checksum"), "{}", d[0].message);
        assert!(matches!(pieces[2].0, Piece::Data(_)));
    }
}
