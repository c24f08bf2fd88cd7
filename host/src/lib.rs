//! sluice: streaming pipelines with WebAssembly transforms.
//!
//! Module map (one line each; see ARCHITECTURE.md for the invariants):
pub(crate) mod admin; // the loopback admin endpoint (bearer token): Prometheus /metrics, JSON /status
pub(crate) mod aws; // the AWS SDK configuration every client starts from (default chain, region/endpoint, SDK retries off)
pub mod batch; // the batch type that flows through pipelines: json/arrow data + per-record provenance; `Rejection`, the one record-failure type
pub mod bench; // `sluice bench`: native vs Wasm, JSON vs Arrow, end to end; `sluice bench-s3`: local vs S3 Parquet end to end
pub mod bench_kinesis; // `sluice bench-kinesis`: Kinesis source read throughput vs a bare GetRecords loop
pub mod bench_opensearch; // `sluice bench-opensearch`: OpenSearch sink vs a bare bulk loop, read → searchable latency
pub mod checkpoint; // the checkpoint document and its stores (local dir; S3 with conditional writes and a lease)
pub mod cli; // what the subcommands do (host/cli, the binary, is only the clap layer)
pub(crate) mod convert; // host-side JSON <-> Arrow batch conversion, only where neighbouring nodes disagree
pub mod config; // pipeline TOML: interpolation, typed model, validation with file:line:key errors
pub mod dead_letter; // a record given up on (node, code, message, provenance, bytes as it arrived), carried to the DLQ sink
pub mod gen; // deterministic synthetic NYC taxi trips (CSV/NDJSON, labelled defects) for `sluice gen` and the generator source
pub mod pipeline; // runtime: node tasks, edges with backpressure, barriers, checkpoint coordinator, windowed aggregate stages
pub(crate) mod plugin; // wasmtime engine, compiled-component cache, sandbox, per-stage instances
pub mod produce; // `sluice produce`: CSV/NDJSON file -> Kinesis PutRecords (retries, KPL aggregation, progress)
pub mod retry; // the one retry policy: exponential backoff, full jitter, bounded
pub mod s3; // S3 shared by the checkpoint store and sink backends: s3:// URLs, the client (credential chain, endpoint, path style), error classification
pub mod sink; // sinks (parquet, file, opensearch, dlq), the two-phase prepare/commit contract, what each `SinkSpec` kind is
pub mod source; // sources (file, generator, kinesis) and the position/barrier contract
pub mod telemetry; // tracing setup: text or JSON logs on stderr
