//! The pipeline file, as serde sees it. Every table denies unknown keys so a
//! typo is an error with its file, line and key path, never a silent default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::{ByteSize, Dur, LoopbackAddr, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(default)]
    pub pipeline: PipelineMeta,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    #[serde(default)]
    pub batch: BatchSpec,
    /// Defaults for every stage's sandbox; a stage may override them.
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub dlq: DlqSpec,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    #[serde(default)]
    pub stages: BTreeMap<String, StageSpec>,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSpec>,
    /// The admin endpoint (metrics, status); off unless this table is present.
    #[serde(default)]
    pub admin: Option<AdminSpec>,
}

/// `[admin]`: an HTTP endpoint on loopback; every request needs the token as
/// `Authorization: Bearer <token>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// e.g. `"127.0.0.1:9464"`; port 0 picks a free port (printed at start).
    pub listen: LoopbackAddr,
    pub token: Secret,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineMeta {
    pub name: Option<String>,
    /// Where compiled plugins are cached (keyed by component hash).
    pub cache_dir: Option<String>,
    /// A run in which some node rejected more than this fraction (0..1) of
    /// its input exits 1 after its final checkpoint. `--max-reject-rate`
    /// wins. Default: none (the run warns above 10% and exits 0).
    pub max_reject_rate: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// A local directory, or `s3://bucket/prefix`. Empty until `load`
    /// resolves the default, `.sluice/<pipeline name>` (one per pipeline, so
    /// two pipelines run from one directory never share a checkpoint).
    #[serde(default)]
    pub dir: String,
    /// How often to checkpoint (and so the longest a sink buffers before its
    /// files roll, like Firehose's buffer interval).
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// S3 stores: how long a lease lives without a heartbeat before another
    /// process may take the store over (default 60s).
    #[serde(default)]
    pub lease_ttl: Option<Dur>,
}

fn default_interval() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            dir: String::new(),
            interval: default_interval(),
            lease_ttl: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    // No `max_wait`: no source holds records back to fill a batch (a file is
    // read as fast as downstream takes it, every Kinesis read is emitted as
    // it arrives), so there is no partial batch whose latency to bound.
    /// Records per batch handed to a plugin.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Batches in flight on each edge before the sender waits (backpressure).
    #[serde(default = "default_channel")]
    pub channel_capacity: usize,
}

fn default_max_records() -> usize {
    2048
}
fn default_max_bytes() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_channel() -> usize {
    4
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            channel_capacity: default_channel(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Linear memory per plugin instance.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Wall-clock budget of one plugin call (enforced by epoch interruption).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_memory() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self { memory: default_memory(), timeout: default_timeout() }
    }
}

/// Optional per-stage overrides of `[limits]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    pub memory: Option<ByteSize>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqSpec {
    /// NDJSON file of rejected records. Empty until `load` resolves the
    /// default, `dlq.ndjson` inside the local checkpoint directory (next to
    /// `checkpoint.json`; `.sluice/<pipeline name>/dlq.ndjson` when the
    /// checkpoint is in S3), so every pipeline has its own.
    #[serde(default)]
    pub path: String,
    /// For `path = "s3://bucket/prefix/"`: as the Parquet sink's keys.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub sse: Option<crate::s3::Sse>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl DlqSpec {
    pub fn s3(&self) -> crate::s3::S3Keys {
        crate::s3::S3Keys {
            region: self.region.clone().filter(|s| !s.is_empty()),
            endpoint: self.endpoint.clone().filter(|s| !s.is_empty()),
            sse: self.sse,
            kms_key_id: self.kms_key_id.clone(),
            storage_class: self.storage_class.clone(),
            tags: self.tags.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    File(crate::source::file::config::FileSourceSpec),
    Generator(GeneratorSourceSpec),
    Kinesis(crate::source::kinesis::config::KinesisSourceSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSourceSpec {
    /// Rows to generate (the run ends after them).
    pub rows: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub bad_fraction: f64,
}

/// WASI capabilities a stage is granted. Everything is denied by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSpec {
    /// Environment variables passed through by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directories mounted read-only, as `{ host = "...", guest = "/data" }`.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Network access: `true` (anything), or an allow-list of `HOST:PORT`
    /// patterns for outbound TCP/UDP (see `plugin::net`). Default: none.
    #[serde(default)]
    pub network: crate::plugin::net::NetworkGrant,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    pub host: String,
    pub guest: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub inputs: Vec<String>,
    /// Path to the component (`.wasm`), relative to the pipeline file.
    pub plugin: String,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: Option<toml::Table>,
    #[serde(default)]
    pub limits: LimitsOverride,
    #[serde(default)]
    pub grants: GrantsSpec,
    /// Aggregate stages only: the bound on the stage's in-memory state
    /// (open windows, their keys and accumulators, keyed state).
    #[serde(default)]
    pub state_memory: Option<ByteSize>,
    /// Aggregate stages only (required there): the event-time window.
    #[serde(default)]
    pub window: Option<crate::config::window::WindowSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkSpec {
    Parquet(crate::sink::parquet::config::ParquetSinkSpec),
    File(crate::sink::file::FileSinkSpec),
    #[serde(rename = "opensearch")]
    OpenSearch(crate::sink::opensearch::config::OpenSearchSinkSpec),
}
