//! The part of the source contract every bounded source shares: send a batch
//! (and its malformed rows to the DLQ), answer barriers between batches with
//! the position, and after the input ends keep answering until the last one.

use tokio::sync::mpsc::error::TryRecvError;

use super::{SourceCtx, SourceError};
use crate::batch::Batch;
use crate::dead_letter::DeadLetter;
use crate::pipeline::msg::{Ack, Barrier, Partitions, Request};

pub async fn send(ctx: &SourceCtx, batch: Option<Batch>, malformed: Vec<DeadLetter>) -> Result<(), SourceError> {
    let closed = |_| SourceError::Closed(ctx.node.clone());
    if !malformed.is_empty() {
        ctx.stats.add_rejected(malformed.len());
        ctx.stats.add_in(malformed.len());
        ctx.out.dead_letters(malformed).await.map_err(closed)?;
    }
    if let Some(b) = batch {
        ctx.stats.add_in(b.len());
        ctx.stats.add_out(b.len());
        ctx.stats.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.out.send(b).await.map_err(closed)?;
    }
    Ok(())
}

/// Announce the partitions the source opened (before their first record)
/// and closed for good (after their last one).
pub async fn partitions(ctx: &SourceCtx, opened: Vec<std::sync::Arc<str>>, closed: Vec<std::sync::Arc<str>>) -> Result<(), SourceError> {
    if opened.is_empty() && closed.is_empty() {
        return Ok(());
    }
    let p = Partitions { source: ctx.name.clone(), opened, closed };
    ctx.out.partitions(p).await.map_err(|_| SourceError::Closed(ctx.node.clone()))
}

/// Emit a barrier downstream and acknowledge it with `position`.
pub async fn barrier(ctx: &SourceCtx, b: Barrier, position: serde_json::Value) -> Result<(), SourceError> {
    ctx.out.barrier(b).await.map_err(|_| SourceError::Closed(ctx.node.clone()))?;
    let _ = ctx.acks.send(Ack { node: ctx.node.clone(), epoch: b.epoch, state: Some(position) });
    Ok(())
}

/// Answer barriers that arrived while the last batch was built. Returns true
/// when the last barrier was among them (the source must stop).
pub async fn pending_barriers(ctx: &mut SourceCtx, position: impl Fn() -> serde_json::Value) -> Result<bool, SourceError> {
    loop {
        match ctx.barriers.try_recv() {
            Ok(b) => {
                barrier(ctx, b, position()).await?;
                if b.last {
                    return Ok(true);
                }
            }
            Err(TryRecvError::Empty) => return Ok(false),
            Err(TryRecvError::Disconnected) => return Ok(true),
        }
    }
}

/// The input is exhausted: say so, then answer barriers until the last one.
pub async fn finish(ctx: &mut SourceCtx, position: serde_json::Value) -> Result<(), SourceError> {
    let _ = ctx.requests.send(Request::Exhausted { node: ctx.node.clone() });
    while let Some(b) = ctx.barriers.recv().await {
        barrier(ctx, b, position.clone()).await?;
        if b.last {
            break;
        }
    }
    Ok(())
}
