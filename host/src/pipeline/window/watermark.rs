//! Event-time progress of an aggregate stage. Each input partition (a file,
//! a Kinesis shard: the batch's `Origin`) has its own watermark, the largest
//! event time it delivered. The stage's watermark is the minimum over the
//! partitions that are not idle, so a slow partition holds windows open
//! rather than having its records declared late; a partition that delivered
//! nothing for `idle_timeout` (processing time) stops holding the others
//! back and rejoins with its next record. When every partition is idle the
//! largest watermark counts (nothing is coming that could be held back for).
//! The stage watermark never goes back.
//!
//! A partition a source announced as opened counts before it delivers: it
//! holds the watermark at -inf (as in Flink, where every assigned split
//! does) until its first record or `idle_timeout` of silence. Without this,
//! one shard's backlog pushes the watermark ahead while another shard's
//! reader has not delivered yet, and that shard's backlog arrives "late".
//! A partition announced as closed (read to its end for good) stops counting.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Partition {
    max: i64,
    seen: Instant,
}

#[derive(Debug, Clone)]
pub struct Watermarks {
    parts: BTreeMap<String, Partition>,
    idle_timeout: Duration,
    /// The stage watermark; `i64::MIN` before any record.
    stage: i64,
}

impl Watermarks {
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            parts: BTreeMap::new(),
            idle_timeout,
            stage: i64::MIN,
        }
    }

    pub fn stage(&self) -> i64 {
        self.stage
    }

    /// The watermark a record of `partition` at `t` sees once the records
    /// before it moved it: the batch's partition is active, `others` is what
    /// [`Watermarks::others`] returned at the start of the batch.
    pub fn with(&self, part_max: i64, others: Option<i64>) -> i64 {
        let candidate = others.map_or(part_max, |o| o.min(part_max));
        candidate.max(self.stage)
    }

    /// The minimum over the non-idle partitions other than `except`
    /// (`None`: no other partition holds the watermark back).
    pub fn others(&self, except: &str, now: Instant) -> Option<i64> {
        self.parts
            .iter()
            .filter(|(k, p)| k.as_str() != except && now.duration_since(p.seen) < self.idle_timeout)
            .map(|(_, p)| p.max)
            .min()
    }

    /// The partition's watermark so far (`i64::MIN` when new).
    pub fn partition(&self, name: &str) -> i64 {
        self.parts.get(name).map_or(i64::MIN, |p| p.max)
    }

    /// A source opened `name`: it holds the watermark back (at -inf when it
    /// is new) until it delivers or stays silent for `idle_timeout` from now.
    /// A known partition (one restored from a checkpoint, or announced again)
    /// keeps its watermark and counts as just seen.
    pub fn open(&mut self, name: &str, now: Instant) {
        self.parts
            .entry(name.to_string())
            .and_modify(|p| p.seen = now)
            .or_insert(Partition {
                max: i64::MIN,
                seen: now,
            });
    }

    /// A source read `name` to its end for good: it no longer holds anything back.
    pub fn close(&mut self, name: &str, now: Instant) {
        if self.parts.remove(name).is_some() {
            self.advance(now);
        }
    }

    /// A batch of `name` was applied: its largest event time so far is `max`.
    pub fn delivered(&mut self, name: &str, max: i64, now: Instant) {
        let p = self
            .parts
            .entry(name.to_string())
            .or_insert(Partition { max, seen: now });
        p.max = p.max.max(max);
        p.seen = now;
        self.advance(now);
    }

    /// Recompute the stage watermark (idleness changes with time alone).
    pub fn advance(&mut self, now: Instant) -> i64 {
        let active = self
            .parts
            .values()
            .filter(|p| now.duration_since(p.seen) < self.idle_timeout)
            .map(|p| p.max)
            .min();
        let all_idle = self.parts.values().map(|p| p.max).max();
        if let Some(w) = active.or(all_idle) {
            self.stage = self.stage.max(w);
        }
        self.stage
    }

    /// Partitions and the stage watermark, for the checkpoint.
    pub fn snapshot(&self) -> (BTreeMap<String, i64>, i64) {
        (
            self.parts.iter().map(|(k, p)| (k.clone(), p.max)).collect(),
            self.stage,
        )
    }

    /// Inverse of `snapshot`; restored partitions count as just seen.
    pub fn restore(&mut self, parts: BTreeMap<String, i64>, stage: i64, now: Instant) {
        self.parts = parts
            .into_iter()
            .map(|(k, max)| (k, Partition { max, seen: now }))
            .collect();
        self.stage = stage;
    }

    /// Number of partitions currently idle (for logs and metrics).
    pub fn idle(&self, now: Instant) -> usize {
        self.parts
            .values()
            .filter(|p| now.duration_since(p.seen) >= self.idle_timeout)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        assert_eq!(w.stage(), i64::MIN);
        w.delivered("a", 100, t0);
        assert_eq!(w.stage(), 100, "one partition: its own watermark");
        w.delivered("b", 50, t0);
        assert_eq!(w.stage(), 100, "never goes back");
        w.delivered("a", 300, t0);
        assert_eq!(w.stage(), 100, "b (at 50) holds it");
        w.delivered("b", 200, t0);
        assert_eq!(w.stage(), 200);
        assert_eq!(w.others("a", t0), Some(200));
        assert_eq!(w.with(250, w.others("a", t0)), 200);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_others_back_and_rejoins() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let mut w = Watermarks::new(idle);
        w.delivered("a", 100, t0);
        w.delivered("b", 100, t0);
        w.delivered("a", 500, t0 + Duration::from_secs(20));
        assert_eq!(w.stage(), 100, "b is not idle yet");
        assert_eq!(w.advance(t0 + Duration::from_secs(29)), 100);
        assert_eq!(w.idle(t0 + Duration::from_secs(31)), 1);
        assert_eq!(
            w.advance(t0 + Duration::from_secs(31)),
            500,
            "b idle: a alone"
        );
        // b rejoins behind the stage watermark: the watermark does not go back,
        // and b holds it from now on.
        w.delivered("b", 200, t0 + Duration::from_secs(32));
        assert_eq!(w.stage(), 500);
        w.delivered("a", 900, t0 + Duration::from_secs(33));
        assert_eq!(w.stage(), 500, "b (at 200) holds it again");
        w.delivered("b", 700, t0 + Duration::from_secs(34));
        assert_eq!(w.stage(), 700);
    }

    #[test]
    fn when_every_partition_is_idle_the_largest_counts() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(1));
        w.delivered("a", 100, t0);
        w.delivered("b", 300, t0);
        assert_eq!(w.stage(), 100);
        assert_eq!(w.advance(t0 + Duration::from_secs(2)), 300);
    }

    #[test]
    fn an_opened_partition_holds_the_watermark_before_it_delivers() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        w.open("a", t0);
        w.open("b", t0);
        w.delivered("a", 1_000, t0);
        assert_eq!(w.stage(), i64::MIN, "b has delivered nothing yet");
        assert_eq!(w.others("a", t0), Some(i64::MIN));
        assert_eq!(w.with(1_000, w.others("a", t0)), i64::MIN);
        w.delivered("a", 5_000, t0 + Duration::from_secs(10));
        assert_eq!(w.advance(t0 + Duration::from_secs(29)), i64::MIN);
        // b's backlog starts behind a: nothing of it is behind the watermark.
        w.delivered("b", 200, t0 + Duration::from_secs(29));
        assert_eq!(w.stage(), 200);
        w.delivered("b", 6_000, t0 + Duration::from_secs(29));
        assert_eq!(w.stage(), 5_000);
    }

    #[test]
    fn an_opened_partition_that_stays_silent_goes_idle() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        w.open("a", t0);
        w.open("b", t0);
        w.delivered("a", 1_000, t0 + Duration::from_secs(5));
        assert_eq!(w.advance(t0 + Duration::from_secs(29)), i64::MIN);
        assert_eq!(w.idle(t0 + Duration::from_secs(30)), 1);
        assert_eq!(
            w.advance(t0 + Duration::from_secs(30)),
            1_000,
            "b idle: a alone"
        );
    }

    #[test]
    fn a_closed_partition_stops_holding_and_its_children_hold() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        w.open("parent", t0);
        w.open("other", t0);
        w.delivered("parent", 100, t0);
        w.delivered("other", 900, t0);
        assert_eq!(w.stage(), 100);
        // The parent ends and its child opens: the child holds until it delivers.
        w.open("child", t0);
        w.close("parent", t0);
        assert_eq!(w.stage(), 100, "the child (no record yet) holds it");
        w.delivered("child", 400, t0);
        assert_eq!(w.stage(), 400);
        assert_eq!(w.partition("parent"), i64::MIN, "forgotten");
        w.close("child", t0);
        assert_eq!(w.stage(), 900, "other alone");
    }

    #[test]
    fn opening_a_known_partition_keeps_its_watermark() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        w.delivered("a", 100, t0);
        w.delivered("b", 300, t0);
        let (parts, stage) = w.snapshot();
        let mut r = Watermarks::new(Duration::from_secs(30));
        r.restore(parts, stage, t0);
        r.open("a", t0);
        r.open("b", t0);
        r.open("c", t0);
        assert_eq!((r.partition("a"), r.partition("b")), (100, 300));
        assert_eq!(r.others("a", t0), Some(i64::MIN), "c holds");
        assert_eq!(r.advance(t0), 100, "never goes back");
    }

    #[test]
    fn restore_keeps_partitions_and_stage() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        w.delivered("a", 100, t0);
        w.delivered("b", 50, t0);
        let (parts, stage) = w.snapshot();
        let mut r = Watermarks::new(Duration::from_secs(30));
        r.restore(parts, stage, t0);
        assert_eq!(
            (
                r.stage(),
                r.partition("a"),
                r.partition("b"),
                r.partition("c")
            ),
            (100, 100, 50, i64::MIN)
        );
    }
}
