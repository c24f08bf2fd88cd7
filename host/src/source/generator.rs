//! Generator source: the synthetic taxi trips of `sluice gen`, produced in
//! memory (demos and benchmarks without a file). Row i is a pure function of
//! (seed, i), so the position is just the next row index.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::rows::RowBatcher;
use super::{emit, SourceCtx, SourceError};
use crate::batch::Origin;
use crate::config::GeneratorSourceSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    next: u64,
}

pub async fn run(spec: GeneratorSourceSpec, mut ctx: SourceCtx) -> Result<(), SourceError> {
    let opts = crate::gen::GenOptions { rows: spec.rows, seed: spec.seed, bad_fraction: spec.bad_fraction };
    let origin = Arc::new(Origin { source: ctx.name.clone(), partition: format!("generator-{}", spec.seed).into() });
    let mut next = ctx.resume.take().and_then(|v| serde_json::from_value::<Position>(v).ok()).map_or(0, |p| p.next);
    let columns: Vec<String> = crate::gen::CSV_HEADER.split(',').map(str::to_string).collect();
    let mut batcher = RowBatcher::new(ctx.preferred, columns, &ctx.node, &origin);
    let mut text = Vec::with_capacity(256 * ctx.batch.max_records);
    let max = ctx.batch.max_records.max(1) as u64;
    while next < spec.rows {
        let end = (next + max).min(spec.rows);
        text.clear();
        for i in next..end {
            crate::gen::row(&opts, i).write_csv(&mut text);
            text.push(b'\n');
        }
        batcher.push_csv_text(&text, next);
        next = end;
        let (batch, malformed) = batcher.take();
        emit::send(&ctx, batch, malformed).await?;
        if emit::pending_barriers(&mut ctx, || serde_json::json!({ "next": next })).await? {
            return Ok(());
        }
    }
    emit::finish(&mut ctx, serde_json::json!({ "next": next })).await
}
