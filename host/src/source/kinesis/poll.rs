//! Polling reader: GetRecords in a loop on one shard.
//!
//! Per-shard limits are 5 GetRecords calls/s and 2 MB/s, shared by every
//! polling consumer of the stream: calls start at least 200 ms apart and, after
//! a response of B bytes, B / `read_bytes_per_sec` after the call started (the
//! limits are about calls and bytes per second, so the call's own time counts). Throttling backs off
//! without limit, network errors within the retry policy, and an expired
//! iterator is replaced from the last record read. A start past the trim
//! horizon goes on from TRIM_HORIZON (`ReaderCtx::open_iterator`); a shard
//! that is not found any more is reported `Gone`.

use std::time::Duration;

use tokio::time::Instant;

use super::client::{classify, CallError, ErrorKind};
use super::position::StartAt;
use super::reader::{children, throttle_policy, ReaderCtx, ShardEvent};

const MIN_CALL_SPACING: Duration = Duration::from_millis(200);

/// Reader task body: reads until SHARD_END (then reports `End`), until the
/// merge task goes away, or until it fails (then reports `Failed`).
pub async fn run(r: ReaderCtx) {
    let start = r.start.clone();
    run_from(r, start).await
}

/// Like `run` from `start` (fan-out uses it to finish a closed shard).
pub async fn run_from(mut r: ReaderCtx, start: StartAt) {
    match read_to_end(&mut r, start).await {
        Ok(()) => {}
        // A closed shard that expired between ListShards and this read
        // (GetShardIterator / GetRecords: ResourceNotFoundException).
        Err(error) if error.kind == ErrorKind::NotFound => {
            tracing::warn!(shard = %r.shard, %error, "shard not found on read: it expired, or the stream is gone");
            let shard = r.shard.clone();
            r.report(ShardEvent::Gone { shard }).await;
        }
        Err(error) => {
            tracing::error!(shard = %r.shard, %error, "shard reader failed");
            let shard = r.shard.clone();
            r.report(ShardEvent::Failed { shard, error }).await;
        }
    }
}

async fn read_to_end(r: &mut ReaderCtx, mut start: StartAt) -> Result<(), CallError> {
    let mut iterator = r.open_iterator(&mut start).await?;
    let mut next_call = Instant::now();
    let mut throttled = throttle_policy().start();
    let mut transient = r.retry.start();
    loop {
        tokio::time::sleep_until(next_call).await;
        let call_start = Instant::now();
        let resp = r
            .client
            .get_records()
            .shard_iterator(&iterator)
            .limit(r.poll_limit)
            .set_stream_arn(r.stream.arn_owned())
            .send()
            .await;
        let out = match resp {
            Ok(out) => out,
            Err(e) => {
                let err = classify(&e);
                match err.kind {
                    ErrorKind::ExpiredIterator => {
                        tracing::debug!(shard = %r.shard, "shard iterator expired; getting a new one");
                        iterator = r.open_iterator(&mut start).await?;
                        next_call = Instant::now() + MIN_CALL_SPACING;
                    }
                    ErrorKind::Throttled => {
                        let d = throttled.next_delay().unwrap_or(Duration::from_secs(5));
                        tracing::debug!(shard = %r.shard, delay_ms = d.as_millis() as u64, "GetRecords throttled");
                        next_call = Instant::now() + d.max(MIN_CALL_SPACING);
                    }
                    ErrorKind::Transient | ErrorKind::InUse => match transient.next_delay() {
                        Some(d) => {
                            tracing::warn!(shard = %r.shard, error = %err, delay_ms = d.as_millis() as u64, "GetRecords failed; retrying");
                            next_call = Instant::now() + d.max(MIN_CALL_SPACING);
                        }
                        None => return Err(r.context(err, "GetRecords")),
                    },
                    _ => return Err(r.context(err, "GetRecords")),
                }
                continue;
            }
        };
        throttled.reset();
        transient.reset();
        let now = Instant::now();
        let bytes: u64 = out.records().iter().map(|x| x.data().as_ref().len() as u64).sum();
        let budget = match r.read_bytes_per_sec {
            0 => Duration::ZERO,
            rate => Duration::from_micros(bytes.saturating_mul(1_000_000) / rate),
        };
        next_call = call_start + MIN_CALL_SPACING.max(budget);
        let n = out.records().len();
        if let Some(last) = out.records().last() {
            // Everything fetched is handed over below: an expired iterator resumes after it.
            start = StartAt::After(last.sequence_number().to_string());
        }
        let millis_behind = out.millis_behind_latest();
        let pieces = r.shaper.shape(out.records());
        let shard = r.shard.clone();
        if !r.report(ShardEvent::Chunk { shard, pieces, records: n, millis_behind, advance: None }).await {
            return Ok(());
        }
        match out.next_shard_iterator() {
            Some(it) if !it.is_empty() => iterator = it.to_string(),
            _ => {
                let shard = r.shard.clone();
                let children = children(out.child_shards());
                tracing::info!(%shard, ?children, "shard end");
                r.report(ShardEvent::End { shard, children }).await;
                return Ok(());
            }
        }
        // Caught up: wait before asking again. Behind (or a closed shard
        // walking to its end through empty responses): ask again soon.
        if n == 0 && millis_behind.unwrap_or(0) == 0 {
            next_call = next_call.max(now + r.poll_interval);
        }
    }
}
