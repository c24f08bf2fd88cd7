//! What a shard reader (polling or fan-out) gets and what it reports to the
//! merge task. One reader task per shard; the merge task is the only emitter.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition};
use aws_sdk_kinesis::Client;
use aws_smithy_types::DateTime;
use tokio::sync::mpsc;

use super::client::{classify, CallError, ErrorKind, StreamId};
use super::position::{ShardPosition, StartAt};
use super::records::{Piece, Shaper};

/// DLQ code of the marker left when a position was past the trim horizon.
pub const TRIMMED: &str = "kinesis_trimmed";
use crate::retry::RetryPolicy;

/// A reader's report. Per shard, events arrive in the order they were sent,
/// so `End` always follows the shard's last `Chunk`.
#[derive(Debug)]
pub enum ShardEvent {
    Chunk {
        shard: Arc<str>,
        pieces: Vec<(Piece, ShardPosition)>,
        /// Kinesis records in the response (0 = nothing new).
        records: usize,
        millis_behind: Option<i64>,
        /// Where the shard stands after the pieces, when the service says so
        /// without a record (fan-out ContinuationSequenceNumber): a quiet
        /// shard's position keeps moving, so it never falls behind the trim horizon.
        advance: Option<ShardPosition>,
    },
    /// SHARD_END: every record of the shard was sent before this.
    End { shard: Arc<str>, children: Vec<(String, Vec<String>)> },
    /// The shard's position was older than the trim horizon (records between it
    /// and the horizon expired unread, if there were any): the reader went on
    /// from TRIM_HORIZON. `marker` is the dead letter that says so.
    Trimmed { shard: Arc<str>, marker: Piece },
    /// ResourceNotFound on a read: the shard expired between the listing and
    /// the read. The merge task checks the listing before finishing it.
    Gone { shard: Arc<str> },
    /// The reader gave up (retries exhausted or a fatal error).
    Failed { shard: Arc<str>, error: CallError },
}

pub struct ReaderCtx {
    /// The source's name (metrics labels).
    pub source: Arc<str>,
    pub client: Client,
    pub stream: StreamId,
    pub shard: Arc<str>,
    pub start: StartAt,
    pub shaper: Shaper,
    pub tx: mpsc::Sender<ShardEvent>,
    pub poll_limit: i32,
    pub poll_interval: Duration,
    /// Byte pacing per shard (0 = none).
    pub read_bytes_per_sec: u64,
    /// For network errors and 5xx.
    pub retry: RetryPolicy,
    /// Fan-out: when to renew a subscription (before the server's 5 minutes).
    pub renew_after: Duration,
    /// Fan-out: resubscribe when no event came for this long (half-open connection).
    pub idle_timeout: Duration,
    /// Set by the merge task when discovery sees the shard closed (fan-out
    /// uses it: emulators never end a closed shard's subscription).
    pub closed: Arc<AtomicBool>,
}

/// Backoff for throttling: never gives up (a throttled shard recovers), capped.
pub fn throttle_policy() -> RetryPolicy {
    RetryPolicy::forever(Duration::from_millis(200), Duration::from_secs(5))
}

impl ReaderCtx {
    /// Sends an event; false when the merge task is gone (the source stopped).
    pub async fn report(&self, ev: ShardEvent) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    /// A shard iterator at `start`, retrying throttling and transient errors.
    pub async fn iterator(&self, start: &StartAt) -> Result<String, CallError> {
        let mut throttled = throttle_policy().start();
        let mut transient = self.retry.start();
        loop {
            let mut req = self
                .client
                .get_shard_iterator()
                .set_stream_name(self.stream.name_owned())
                .set_stream_arn(self.stream.arn_owned())
                .shard_id(self.shard.as_ref());
            req = match start {
                StartAt::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
                StartAt::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
                StartAt::AtTimestamp(ms) => req.shard_iterator_type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_millis(*ms)),
                StartAt::After(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq),
                StartAt::At { seq, .. } => req.shard_iterator_type(ShardIteratorType::AtSequenceNumber).starting_sequence_number(seq),
            };
            match req.send().await {
                Ok(out) => {
                    return out.shard_iterator().map(str::to_string).ok_or_else(|| CallError {
                        kind: ErrorKind::Fatal,
                        code: None,
                        message: format!("GetShardIterator for {} returned no iterator", self.shard),
                    })
                }
                Err(e) => {
                    let err = classify(&e);
                    let wait = match err.kind {
                        ErrorKind::Throttled => throttled.next_delay(),
                        ErrorKind::Transient | ErrorKind::InUse => transient.next_delay(),
                        _ => None,
                    };
                    match wait {
                        Some(d) => {
                            tracing::debug!(shard = %self.shard, error = %err, "GetShardIterator failed; retrying");
                            tokio::time::sleep(d).await
                        }
                        None => return Err(self.context(err, "GetShardIterator")),
                    }
                }
            }
        }
    }

    /// `iterator`, except that a sequence-number start the service refuses
    /// as past the trim horizon (InvalidArgumentException) is reported and
    /// replaced with TRIM_HORIZON instead of failing: every restart from that
    /// position would fail the same way (a crash loop).
    pub async fn open_iterator(&mut self, start: &mut StartAt) -> Result<String, CallError> {
        match self.iterator(start).await {
            Err(e) if e.kind == ErrorKind::InvalidArgument && start.sequence().is_some() => {
                if !self.trimmed(start, &e).await {
                    return Err(e); // the source stopped; the error is not reported
                }
                self.iterator(start).await
            }
            r => r,
        }
    }

    /// Reports a position past the trim horizon, loudly, and moves `start` to
    /// TRIM_HORIZON. False when the merge task is gone.
    pub async fn trimmed(&mut self, start: &mut StartAt, err: &CallError) -> bool {
        let seq = start.sequence().unwrap_or_default().to_string();
        tracing::error!(
            source = %self.source, shard = %self.shard, seq, error = %err,
            "the shard's position is older than the stream's retention (trim horizon): reading on from TRIM_HORIZON; \
             records between that position and the horizon, if there were any, expired unread"
        );
        ::metrics::counter!("sluice_kinesis_trimmed_positions_total", "source" => self.source.to_string(), "shard" => self.shard.to_string())
            .increment(1);
        let message = format!(
            "position {seq} of shard {} is past the trim horizon of stream {}: reading resumed at TRIM_HORIZON; \
             records older than the retention period are gone ({})",
            self.shard, self.stream, err.message
        );
        let marker = self.shaper.marker(TRIMMED, &message, &seq);
        *start = StartAt::TrimHorizon;
        let shard = self.shard.clone();
        self.report(ShardEvent::Trimmed { shard, marker }).await
    }

    /// Names the shard and operation in an error that ends the reader.
    pub fn context(&self, mut err: CallError, op: &str) -> CallError {
        err.message = format!("{op} on {} of stream {}: {}", self.shard, self.stream, err.message);
        err
    }
}

/// The fan-out starting position for `start`.
pub fn starting_position(start: &StartAt) -> StartingPosition {
    let b = StartingPosition::builder();
    let b = match start {
        StartAt::TrimHorizon => b.r#type(ShardIteratorType::TrimHorizon),
        StartAt::Latest => b.r#type(ShardIteratorType::Latest),
        StartAt::AtTimestamp(ms) => b.r#type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_millis(*ms)),
        StartAt::After(seq) => b.r#type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
        StartAt::At { seq, .. } => b.r#type(ShardIteratorType::AtSequenceNumber).sequence_number(seq),
    };
    b.build().expect("the type is always set")
}

/// ChildShards of a response, as (child, parents).
pub fn children(c: &[aws_sdk_kinesis::types::ChildShard]) -> Vec<(String, Vec<String>)> {
    c.iter().map(|c| (c.shard_id().to_string(), c.parent_shards().to_vec())).collect()
}
