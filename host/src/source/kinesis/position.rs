//! Positions: what the source reports with each barrier and resumes from.
//!
//! State JSON (the `state` of this source's `Ack`):
//! ```json
//! {
//!   "v": 1,
//!   "stream": "taxi-trips",
//!   "since_ms": 1700000000000,
//!   "stream_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/taxi-trips",
//!   "created_ms": 1690000000000,
//!   "shards": { "shardId-000000000001": { "seq": "4959...", "sub": 3, "whole": false } },
//!   "finished": ["shardId-000000000000"]
//! }
//! ```
//! - `shards`: per shard still being read, the last record emitted before the
//!   barrier: sequence number, sub-sequence (KPL) and whether every sub-record
//!   of that Kinesis record was emitted (`whole`);
//! - `finished`: shards read to SHARD_END with every record emitted — never
//!   read again, and their children may start;
//! - `since_ms`: where a shard without a position starts (see `initial`);
//! - `stream_arn`, `created_ms`: which incarnation of the stream the positions
//!   belong to. A stream deleted and re-created under the same name numbers
//!   its shards from `shardId-000000000000` again, so finished ids of the old
//!   one would match new shards, which would then never be read.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::{KinesisSourceSpec, StartPosition};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPosition {
    pub seq: String,
    #[serde(default)]
    pub sub: u32,
    /// False when a barrier fell inside a KPL aggregate: resume *at* `seq`
    /// and skip its sub-records up to `sub`.
    #[serde(default = "yes")]
    pub whole: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub v: u32,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    /// StreamCreationTimestamp, milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    #[serde(default)]
    pub shards: BTreeMap<String, ShardPosition>,
    #[serde(default)]
    pub finished: BTreeSet<String>,
}

impl SourceState {
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let s: SourceState = serde_json::from_value(v.clone()).map_err(|e| format!("unreadable kinesis source state: {e}"))?;
        if s.v != STATE_VERSION {
            return Err(format!("kinesis source state version {} is not supported (expected {STATE_VERSION})", s.v));
        }
        Ok(s)
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("state serializes")
    }
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    TrimHorizon,
    Latest,
    AtTimestamp(i64),
    After(String),
    /// At `seq`, skipping its sub-records `<= skip_through`.
    At { seq: String, skip_through: u32 },
}

impl StartAt {
    /// The sequence number of a sequence-number start.
    pub fn sequence(&self) -> Option<&str> {
        match self {
            StartAt::After(seq) | StartAt::At { seq, .. } => Some(seq),
            _ => None,
        }
    }

    pub fn resume(p: &ShardPosition) -> Self {
        if p.whole {
            StartAt::After(p.seq.clone())
        } else {
            StartAt::At { seq: p.seq.clone(), skip_through: p.sub }
        }
    }
}

/// Margin for clock skew between this host and Kinesis' arrival timestamps
/// when `latest` is pinned to a time (see `initial`).
const SINCE_MARGIN_MS: i64 = 5_000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The start of a shard that has no position. `latest` is pinned to the time
/// the source first started (`since_ms`, kept in the state): a shard that had
/// emitted nothing by a checkpoint resumes from that time after a restart,
/// instead of from a new "latest" that would skip what arrived in between.
///
/// Never LATEST: a fresh `latest` start always pins `since_ms`, so `latest`
/// without it means the checkpoint comes from a `trim_horizon` start and the
/// setting changed since. A shard without a position then is a child born
/// after that start (or one that had nothing yet): its first records were
/// written before its parents finished, and LATEST would skip them. It starts
/// at its beginning; only a timestamp moves that start.
pub fn initial(spec: &KinesisSourceSpec, since_ms: Option<i64>) -> StartAt {
    match (spec.start_position, since_ms) {
        (StartPosition::AtTimestamp, _) => StartAt::AtTimestamp(spec.start_timestamp().ok().flatten().unwrap_or(0)),
        (StartPosition::Latest, Some(t)) => StartAt::AtTimestamp(t),
        (StartPosition::Latest, None) | (StartPosition::TrimHorizon, _) => StartAt::TrimHorizon,
    }
}

impl ShardPosition {
    /// After sequence number `seq`, every sub-record of it emitted.
    pub fn after(seq: &str) -> Self {
        ShardPosition { seq: seq.to_string(), sub: 0, whole: true }
    }
}

/// `since_ms` for a fresh start.
pub fn fresh_since(spec: &KinesisSourceSpec) -> Option<i64> {
    (spec.start_position == StartPosition::Latest).then(|| now_ms() - SINCE_MARGIN_MS)
}

/// Orders Kinesis sequence numbers (decimal strings of up to 128 bits, no
/// leading zeros): numerically, without parsing.
pub fn cmp_seq(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_shape() {
        let mut s = SourceState { v: 1, stream: "t".into(), since_ms: None, ..Default::default() };
        assert!(SourceState::from_json(&serde_json::json!({"v":1,"stream":"t"})).unwrap().stream_arn.is_none(), "older states load");
        s.shards.insert("shardId-1".into(), ShardPosition { seq: "495".into(), sub: 2, whole: false });
        s.finished.insert("shardId-0".into());
        let j = s.to_json();
        assert_eq!(
            j,
            serde_json::json!({"v":1,"stream":"t","shards":{"shardId-1":{"seq":"495","sub":2,"whole":false}},"finished":["shardId-0"]})
        );
        assert_eq!(SourceState::from_json(&j).unwrap(), s);
        assert!(SourceState::from_json(&serde_json::json!({"v":2,"stream":"t"})).unwrap_err().contains("version"));
    }

    #[test]
    fn resume_points() {
        assert_eq!(StartAt::resume(&ShardPosition { seq: "9".into(), sub: 0, whole: true }), StartAt::After("9".into()));
        assert_eq!(
            StartAt::resume(&ShardPosition { seq: "9".into(), sub: 4, whole: false }),
            StartAt::At { seq: "9".into(), skip_through: 4 }
        );
    }

    #[test]
    fn sequence_order() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_seq("9", "10"), Less);
        assert_eq!(cmp_seq("49590338271490256608559692538361571095921575989136588898", "49590338271490256608559692538361571095921575989136588899"), Less);
        assert_eq!(cmp_seq("100", "100"), Equal);
    }

    #[test]
    fn initial_positions() {
        let mut spec = KinesisSourceSpec::new("s");
        // `latest` without a pinned time: a checkpoint of a `trim_horizon` start
        // read with `latest` now. Its children start at their beginning.
        assert_eq!(initial(&spec, None), StartAt::TrimHorizon);
        assert_eq!(initial(&spec, Some(5)), StartAt::AtTimestamp(5));
        assert!(fresh_since(&spec).is_some());
        spec.start_position = StartPosition::TrimHorizon;
        assert_eq!(initial(&spec, Some(5)), StartAt::TrimHorizon);
        assert!(fresh_since(&spec).is_none());
    }
}
