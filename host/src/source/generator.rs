//! Generator source: the synthetic taxi trips of `sluice gen`, produced in
//! memory (demos and benchmarks without a file). Row i is a pure function of
//! (seed, i), so the position is just the next row index.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::rows::RowBatcher;
use super::{emit, SourceCtx, SourceError};
use crate::batch::{Origin, RecordMeta};
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
    let mut batcher = RowBatcher::new(ctx.preferred, columns);
    let mut line = Vec::with_capacity(256);
    let mut rec = csv::ByteRecord::new();
    let max = ctx.batch.max_records.max(1) as u64;
    while next < spec.rows {
        let end = (next + max).min(spec.rows);
        for i in next..end {
            line.clear();
            crate::gen::row(&opts, i).write_csv(&mut line);
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
            let meta = RecordMeta::line(i);
            match r.read_byte_record(&mut rec) {
                Ok(_) => batcher.push_csv(meta, &rec, text),
                Err(e) => batcher.malformed.push(super::rows::Malformed { meta, raw: text.to_vec(), message: e.to_string() }),
            }
        }
        next = end;
        let (batch, malformed) = batcher.take(&origin);
        emit::send(&ctx, &origin, batch, malformed).await?;
        if emit::pending_barriers(&mut ctx, || serde_json::json!({ "next": next })).await? {
            return Ok(());
        }
    }
    emit::finish(&mut ctx, serde_json::json!({ "next": next })).await
}
