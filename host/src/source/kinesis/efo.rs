//! Enhanced fan-out reader: SubscribeToShard pushes events to a registered
//! stream consumer for up to 5 minutes per subscription.
//!
//! Shard end comes three ways, all handled:
//! - an event with ChildShards (real Kinesis): report `End` with them;
//! - the subscription ends or sends an event with no continuation (LocalStack);
//! - nothing (kinesis-local keeps a closed shard's subscription alive with
//!   empty events): once discovery marks the shard closed, the reader drops
//!   the subscription and finishes the shard by polling, which ends with a
//!   null iterator and the ChildShards on every implementation.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError as StreamError;
use aws_sdk_kinesis::types::{ConsumerStatus, SubscribeToShardEvent, SubscribeToShardEventStream};
use aws_sdk_kinesis::Client;
use tokio::time::Instant;

use super::client::{classify, CallError, ErrorKind, StreamId};
use super::poll;
use super::position::{ShardPosition, StartAt};
use super::reader::{children, starting_position, throttle_policy, ReaderCtx, ShardEvent};
use crate::retry::RetryPolicy;

/// A subscription that ends sooner than this did not time out.
const EARLY_END: Duration = Duration::from_secs(60);

/// The consumer ARN for `name` on `stream`, registering it if needed and
/// waiting until it is ACTIVE.
pub async fn ensure_consumer(client: &Client, stream: &StreamId, name: &str, retry: &RetryPolicy) -> Result<String, CallError> {
    let stream_arn = match stream.arn() {
        Some(a) => a.to_string(),
        None => {
            let out = retry
                .retry(
                    |_| async { client.describe_stream_summary().set_stream_name(stream.name_owned()).send().await.map_err(|e| classify(&e)) },
                    CallError::retryable,
                )
                .await?;
            out.stream_description_summary().map(|s| s.stream_arn().to_string()).ok_or_else(|| CallError {
                kind: ErrorKind::Fatal,
                code: None,
                message: format!("DescribeStreamSummary of {stream} returned no stream ARN"),
            })?
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut registered = false;
    loop {
        let described = client.describe_stream_consumer().stream_arn(&stream_arn).consumer_name(name).send().await;
        match described {
            Ok(out) => {
                if let Some(d) = out.consumer_description() {
                    if d.consumer_status() == &ConsumerStatus::Active {
                        tracing::info!(consumer = name, arn = d.consumer_arn(), "enhanced fan-out consumer ready");
                        return Ok(d.consumer_arn().to_string());
                    }
                    tracing::debug!(consumer = name, status = ?d.consumer_status(), "waiting for the consumer to become ACTIVE");
                }
            }
            Err(e) => {
                let err = classify(&e);
                match err.kind {
                    ErrorKind::NotFound if !registered => {
                        tracing::info!(consumer = name, stream = %stream, "registering enhanced fan-out consumer");
                        match client.register_stream_consumer().stream_arn(&stream_arn).consumer_name(name).send().await {
                            Ok(_) => {}
                            // Registered concurrently by another instance: fine, it is the same consumer.
                            Err(e) if classify(&e).kind == ErrorKind::InUse => {}
                            Err(e) => return Err(classify(&e)),
                        }
                        registered = true;
                    }
                    ErrorKind::NotFound | ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::InUse => {}
                    _ => return Err(err),
                }
            }
        }
        if Instant::now() > deadline {
            return Err(CallError {
                kind: ErrorKind::Fatal,
                code: None,
                message: format!("consumer {name} of {stream} did not become ACTIVE within 2 minutes"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What one event means for the reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// ChildShards arrived: the shard is done.
    End(Vec<(String, Vec<String>)>),
    /// No continuation and no children: confirm the end by polling.
    Verify,
}

/// Advances `resume` past the event and says what comes next.
///
/// The resume point is the event's ContinuationSequenceNumber, as the KCL
/// does (`FanOutRecordsPublisher`): the API reference says to use it for
/// re-subscribing and checkpointing "because it captures your shard progress
/// even when no data is written to the shard". The last record's number
/// would stay put on a quiet shard until the retention trimmed it.
pub fn on_event(ev: &SubscribeToShardEvent, resume: &mut StartAt) -> Step {
    if !ev.continuation_sequence_number().is_empty() {
        *resume = StartAt::After(ev.continuation_sequence_number().to_string());
    } else if let Some(last) = ev.records().last() {
        *resume = StartAt::After(last.sequence_number().to_string());
    }
    if !ev.child_shards().is_empty() {
        Step::End(children(ev.child_shards()))
    } else if ev.continuation_sequence_number().is_empty() {
        Step::Verify
    } else {
        Step::Continue
    }
}

pub async fn run(mut r: ReaderCtx, consumer_arn: String) {
    match subscribe_loop(&mut r, &consumer_arn).await {
        Ok(None) => {}
        // Finish the shard by polling from where the subscription left off.
        Ok(Some(from)) => poll::run_from(r, from).await,
        Err(error) if error.kind == ErrorKind::NotFound => {
            tracing::warn!(shard = %r.shard, %error, "shard not found on subscribe: it expired, or the stream is gone");
            let shard = r.shard.clone();
            r.report(ShardEvent::Gone { shard }).await;
        }
        Err(error) => {
            tracing::error!(shard = %r.shard, %error, "shard subscription failed");
            let shard = r.shard.clone();
            r.report(ShardEvent::Failed { shard, error }).await;
        }
    }
}

/// `Ok(None)`: done (end reported, or the source stopped). `Ok(Some(p))`:
/// the shard is closed and the rest is read by polling from `p`.
async fn subscribe_loop(r: &mut ReaderCtx, consumer_arn: &str) -> Result<Option<StartAt>, CallError> {
    let mut resume = r.start.clone();
    // kinesis-local frees a subscription slot 1-3 s after a drop; real Kinesis
    // refuses a new subscription within 5 s of the previous one.
    let mut in_use = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(4), u32::MAX, Some(Duration::from_secs(90))).start();
    let mut transient = r.retry.start();
    // Throttling (LimitExceeded: over 5 subscriptions per second per consumer,
    // KMSThrottling) is retried without limit, as with polling.
    let mut throttled = throttle_policy().start();
    loop {
        let sub = r
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(r.shard.as_ref())
            .starting_position(starting_position(&resume))
            .send();
        // The SDK's `send` waits for the stream's first message: a connection
        // that goes silent before it hangs here, not in `recv`.
        let sub = match tokio::time::timeout(r.idle_timeout, sub).await {
            Ok(sub) => sub,
            Err(_) => {
                tracing::warn!(shard = %r.shard, ?resume, idle_ms = r.idle_timeout.as_millis() as u64, "SubscribeToShard got no answer; resubscribing");
                idle_metric(r);
                continue;
            }
        };
        let mut events = match sub {
            Ok(out) => out.event_stream,
            Err(e) => {
                if !recover(r, consumer_arn, classify(&e), &mut resume, &mut in_use, &mut transient, &mut throttled).await? {
                    return Ok(None);
                }
                continue;
            }
        };
        let subscribed_at = Instant::now();
        crate::admin::metrics::kinesis_subscribed(&r.source, &r.shard);
        // Subscriptions last 5 minutes; renewing a little earlier (the default
        // `fan_out_renew_after` is 4m50s) avoids racing the server.
        let renew_at = subscribed_at + r.renew_after;
        loop {
            // No event for `fan_out_idle_timeout` on an open subscription (the
            // service sends one every few seconds): a half-open connection.
            let idle_at = Instant::now() + r.idle_timeout;
            let ev = match tokio::time::timeout_at(renew_at.min(idle_at), events.recv()).await {
                Err(_) if Instant::now() < renew_at => {
                    tracing::warn!(shard = %r.shard, ?resume, idle_ms = r.idle_timeout.as_millis() as u64, "no fan-out event for too long; resubscribing");
                    idle_metric(r);
                    break;
                }
                Err(_) => {
                    tracing::debug!(shard = %r.shard, ?resume, "renewing the subscription");
                    break;
                }
                Ok(Ok(None)) => {
                    // The server ended the subscription (5 minutes, or a closed shard on LocalStack).
                    if r.closed.load(Ordering::Relaxed) {
                        return Ok(Some(resume));
                    }
                    if subscribed_at.elapsed() < EARLY_END {
                        // Ended long before the 5 minutes: likely a closed shard that discovery
                        // has not flagged yet. Do not hammer the endpoint meanwhile.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    break;
                }
                Ok(Err(e)) => {
                    if !recover(r, consumer_arn, classify_event_error(&e), &mut resume, &mut in_use, &mut transient, &mut throttled).await? {
                        return Ok(None);
                    }
                    break;
                }
                Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev)))) => ev,
                Ok(Ok(Some(other))) => {
                    tracing::debug!(shard = %r.shard, ?other, "unknown fan-out event ignored");
                    continue;
                }
            };
            in_use.reset();
            transient.reset();
            throttled.reset();
            let step = on_event(&ev, &mut resume);
            let pieces = r.shaper.shape(ev.records());
            let shard = r.shard.clone();
            let n = ev.records().len();
            let cont = ev.continuation_sequence_number();
            let advance = (!cont.is_empty()).then(|| ShardPosition::after(cont));
            let chunk = ShardEvent::Chunk { shard, pieces, records: n, millis_behind: Some(ev.millis_behind_latest()), advance };
            if !r.report(chunk).await {
                return Ok(None);
            }
            match step {
                Step::End(children) => {
                    let shard = r.shard.clone();
                    tracing::info!(%shard, ?children, "shard end (fan-out)");
                    r.report(ShardEvent::End { shard, children }).await;
                    return Ok(None);
                }
                Step::Verify => return Ok(Some(resume)),
                Step::Continue if n == 0 && r.closed.load(Ordering::Relaxed) => return Ok(Some(resume)),
                Step::Continue => {}
            }
        }
    }
}

/// Errors inside the event stream carry their type in the event headers, not
/// as an error code, so the generic classification called them fatal: a
/// renewal answered "ResourceInUse" (the previous subscription not yet
/// released, as kinesis-local does for 1-3 s) stopped the source.
fn classify_event_error<R: super::client::MaybeStatus + std::fmt::Debug>(e: &SdkError<StreamError, R>) -> CallError {
    let mut c = classify(e);
    if c.code.is_none() {
        let typed = match e.as_service_error() {
            Some(StreamError::ResourceInUseException(_)) => Some((ErrorKind::InUse, "ResourceInUseException")),
            Some(StreamError::ResourceNotFoundException(_)) => Some((ErrorKind::NotFound, "ResourceNotFoundException")),
            Some(StreamError::KmsThrottlingException(_)) => Some((ErrorKind::Throttled, "KMSThrottlingException")),
            Some(StreamError::InternalFailureException(_)) => Some((ErrorKind::Transient, "InternalFailureException")),
            _ => None,
        };
        if let Some((kind, code)) = typed {
            c.kind = kind;
            c.code = Some(code.into());
        }
    }
    c
}

fn idle_metric(r: &ReaderCtx) {
    ::metrics::counter!("sluice_kinesis_idle_subscriptions_total", "source" => r.source.to_string(), "shard" => r.shard.to_string()).increment(1);
}

/// What to do after a failed subscription or event stream: wait and retry
/// (`Ok(true)`), stop because the source stopped (`Ok(false)`), or fail.
#[allow(clippy::too_many_arguments)]
async fn recover(
    r: &mut ReaderCtx,
    consumer_arn: &str,
    err: CallError,
    resume: &mut StartAt,
    in_use: &mut crate::retry::Backoff,
    transient: &mut crate::retry::Backoff,
    throttled: &mut crate::retry::Backoff,
) -> Result<bool, CallError> {
    let wait = match err.kind {
        ErrorKind::InUse => in_use.next_delay().map(|d| d.max(Duration::from_secs(1))),
        ErrorKind::Throttled => throttled.next_delay(),
        ErrorKind::Transient => transient.next_delay(),
        // SubscribeToShard from a sequence number older than the trim horizon.
        ErrorKind::InvalidArgument if resume.sequence().is_some() => return Ok(r.trimmed(resume, &err).await),
        ErrorKind::NotFound => return Err(not_found(r, consumer_arn, err).await),
        _ => None,
    };
    match wait {
        Some(d) => {
            tracing::debug!(shard = %r.shard, error = %err, delay_ms = d.as_millis() as u64, "subscription failed; retrying");
            tokio::time::sleep(d).await;
            Ok(true)
        }
        None => Err(r.context(err, "SubscribeToShard")),
    }
}

/// SubscribeToShard's ResourceNotFound names no resource: the shard expired
/// (its end, as the KCL treats it) or the consumer was deregistered (fatal:
/// treating that as the end of every shard would skip them all). A
/// GetShardIterator on the shard tells which.
async fn not_found(r: &ReaderCtx, consumer_arn: &str, err: CallError) -> CallError {
    match r.iterator(&StartAt::TrimHorizon).await {
        Err(e) if e.kind == ErrorKind::NotFound => e,
        _ => CallError {
            kind: ErrorKind::Fatal,
            code: err.code.clone(),
            message: format!(
                "SubscribeToShard on {} of stream {}: the stream consumer {consumer_arn} does not exist any more \
                 (deregistered while reading?): {}",
                r.shard, r.stream, err.message
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{ChildShard, HashKeyRange, Record};
    use aws_smithy_types::Blob;

    fn record(seq: &str) -> Record {
        Record::builder().sequence_number(seq).partition_key("k").data(Blob::new("{}")).build().unwrap()
    }

    fn event(seqs: &[&str], continuation: &str, children: &[(&str, &[&str])]) -> SubscribeToShardEvent {
        let mut b = SubscribeToShardEvent::builder().continuation_sequence_number(continuation).millis_behind_latest(0);
        b = b.set_records(Some(seqs.iter().map(|s| record(s)).collect()));
        for (id, parents) in children {
            let range = HashKeyRange::builder().starting_hash_key("0").ending_hash_key("1").build().unwrap();
            let c = ChildShard::builder()
                .shard_id(*id)
                .set_parent_shards(Some(parents.iter().map(|p| p.to_string()).collect()))
                .hash_key_range(range)
                .build()
                .unwrap();
            b = b.child_shards(c);
        }
        b.build().unwrap()
    }

    #[test]
    fn records_advance_the_resume_point() {
        let mut resume = StartAt::TrimHorizon;
        assert_eq!(on_event(&event(&["5", "7"], "7", &[]), &mut resume), Step::Continue);
        assert_eq!(resume, StartAt::After("7".into()));
        // An empty event moves it to its continuation: on a quiet shard the
        // last record's number would fall behind the trim horizon.
        assert_eq!(on_event(&event(&[], "9", &[]), &mut resume), Step::Continue);
        assert_eq!(resume, StartAt::After("9".into()));
    }

    #[test]
    fn child_shards_end_the_shard() {
        let mut resume = StartAt::TrimHorizon;
        let step = on_event(&event(&["8"], "", &[("shardId-4", &["shardId-0"]), ("shardId-5", &["shardId-0"])]), &mut resume);
        assert_eq!(
            step,
            Step::End(vec![("shardId-4".into(), vec!["shardId-0".into()]), ("shardId-5".into(), vec!["shardId-0".into()])])
        );
        assert_eq!(resume, StartAt::After("8".into()));
        // A merge child names both parents.
        let step = on_event(&event(&[], "", &[("shardId-6", &["shardId-1", "shardId-2"])]), &mut resume);
        assert_eq!(step, Step::End(vec![("shardId-6".into(), vec!["shardId-1".into(), "shardId-2".into()])]));
    }

    #[test]
    fn missing_continuation_without_children_is_verified() {
        let mut resume = StartAt::After("3".into());
        assert_eq!(on_event(&event(&[], "", &[]), &mut resume), Step::Verify);
        assert_eq!(resume, StartAt::After("3".into()));
    }

    #[test]
    fn event_stream_errors_are_classified_by_their_type() {
        use aws_sdk_kinesis::types::error::{InternalFailureException, ResourceInUseException};
        use aws_smithy_types::event_stream::RawMessage;
        let err = |e: StreamError| SdkError::service_error(e, RawMessage::invalid(None));
        // What kinesis-local sends when a renewal comes before the old subscription is released.
        let in_use = err(StreamError::ResourceInUseException(ResourceInUseException::builder().message("Another active subscription exists").build()));
        assert_eq!(classify(&in_use).code, None, "no error code in the event: the generic classification cannot tell");
        let c = classify_event_error(&in_use);
        assert_eq!((c.kind, c.code.as_deref()), (ErrorKind::InUse, Some("ResourceInUseException")));
        let internal = err(StreamError::InternalFailureException(InternalFailureException::builder().message("boom").build()));
        assert_eq!(classify_event_error(&internal).kind, ErrorKind::Transient);
    }
}
