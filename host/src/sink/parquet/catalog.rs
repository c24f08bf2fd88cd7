//! The Glue Data Catalog table of a Parquet sink (`[sinks.X.catalog] glue`):
//! created or updated once the table's schema is known, each partition
//! registered after its first file is committed.
//!
//! Every call is idempotent — create-or-update of the table, and
//! BatchCreatePartition where `AlreadyExists` counts as success — and is
//! retried with backoff on throttling, 5xx and network errors. A failure that
//! outlasts the retries fails the commit, and so the run, *after* the data is
//! committed: nothing is lost, and the next start's `recover` commits the
//! last checkpoint's files again (a no-op for files already visible) and
//! registers their partitions. Partitions of earlier checkpoints were
//! registered before their commit returned, so no committed file is left in
//! an unregistered partition. Failing the run rather than retrying forever
//! keeps a broken catalog (permissions, a deleted database) visible.

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::datatypes::Schema;
use aws_sdk_glue::config::http::HttpResponse;
use aws_sdk_glue::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{
    Column, PartitionInput, SerDeInfo, StorageDescriptor, Table, TableInput,
};
use tokio::sync::OnceCell;

use super::config::{GlueSpec, ParquetSinkSpec};
use super::ddl;
use crate::retry::RetryPolicy;

/// What Athena (and Glue's crawler) put in a Parquet table.
const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
/// BatchCreatePartition takes at most this many partitions per call.
const BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogError {
    /// The catalog cannot hold this sink's table (missing database, a table
    /// with other partition keys): a startup error, not retried.
    #[error("Glue table {table}: {message}")]
    Conflict { table: String, message: String },
    /// A call failed after its retries.
    #[error("Glue table {table}: {what} failed: {message}")]
    Call {
        table: String,
        what: &'static str,
        message: String,
    },
}

/// One failed Glue call, classified.
struct CallError {
    code: String,
    retryable: bool,
    message: String,
}

fn classify<E>(err: &SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    let (code, status) = match err {
        SdkError::ServiceError(ctx) => (
            ctx.err().code().unwrap_or("").to_owned(),
            Some(ctx.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return CallError {
                code: String::new(),
                retryable: true,
                message,
            };
        }
        _ => (String::new(), None),
    };
    let retryable =
        retryable_code(&code) || matches!(status, Some(429 | 500..=599)) && status != Some(501);
    CallError {
        code,
        retryable,
        message,
    }
}

fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "InternalServiceException"
            | "OperationTimeoutException"
            | "ConcurrentModificationException"
    )
}

pub(crate) struct GlueCatalog {
    spec: GlueSpec,
    sink: ParquetSinkSpec,
    client: OnceCell<aws_sdk_glue::Client>,
    retry: RetryPolicy,
    /// The table matches the sink's schema (checked, created or updated this run).
    table_ready: bool,
    /// Partition directories registered this run (a restart registers again:
    /// `AlreadyExists` is success).
    registered: BTreeSet<String>,
}

impl GlueCatalog {
    pub(crate) fn new(spec: &GlueSpec, sink: &ParquetSinkSpec) -> Self {
        GlueCatalog {
            spec: spec.clone(),
            sink: sink.clone(),
            client: OnceCell::new(),
            retry: RetryPolicy::new(
                Duration::from_millis(200),
                Duration::from_secs(5),
                8,
                Some(Duration::from_secs(60)),
            ),
            table_ready: false,
            registered: BTreeSet::new(),
        }
    }

    fn name(&self) -> String {
        format!("{}.{}", self.spec.database, self.spec.table)
    }

    fn call_err(&self, what: &'static str, e: CallError) -> CatalogError {
        CatalogError::Call {
            table: self.name(),
            what,
            message: e.message,
        }
    }

    fn conflict(&self, message: String) -> CatalogError {
        CatalogError::Conflict {
            table: self.name(),
            message,
        }
    }

    /// Built on first use: `build` is synchronous, loading the AWS chain is not.
    async fn client(&self) -> Result<&aws_sdk_glue::Client, CatalogError> {
        let (region, endpoint) = (self.spec.region.clone(), self.spec.endpoint.clone());
        self.client
            .get_or_try_init(|| async move {
                let conf =
                    crate::aws::sdk_config(region, endpoint.as_deref(), Duration::from_secs(20))
                        .await?;
                Ok::<_, String>(aws_sdk_glue::Client::new(&conf))
            })
            .await
            .map_err(|message| self.conflict(message))
    }

    /// At startup: the database exists, and an existing table has the sink's
    /// partition keys (and, once the schema is known, is brought up to date).
    pub(crate) async fn start(
        &mut self,
        schema: Option<&Schema>,
        location: &str,
    ) -> Result<(), CatalogError> {
        let client = self.client().await?;
        let db = &self.spec.database;
        let found = self
            .retry
            .retry(
                |_| async move {
                    client
                        .get_database()
                        .name(db)
                        .send()
                        .await
                        .map_err(|e| classify(&e))
                },
                |e: &CallError| e.retryable,
            )
            .await;
        match found {
            Ok(_) => {}
            Err(e) if e.code == "EntityNotFoundException" => {
                return Err(self.conflict(format!(
                    "database {db:?} does not exist; create it first (aws glue create-database)"
                )))
            }
            Err(e) => return Err(self.call_err("GetDatabase", e)),
        }
        let existing = self.get_table().await?;
        if let Some(t) = &existing {
            self.check_keys(t, schema)?;
        }
        if let Some(schema) = schema {
            self.put_table(existing.as_ref(), schema, location).await?;
        }
        Ok(())
    }

    async fn get_table(&self) -> Result<Option<Table>, CatalogError> {
        let client = self.client().await?;
        let r = self
            .retry
            .retry(
                |_| async move {
                    client
                        .get_table()
                        .database_name(&self.spec.database)
                        .name(&self.spec.table)
                        .send()
                        .await
                        .map_err(|e| classify(&e))
                },
                |e: &CallError| e.retryable,
            )
            .await;
        match r {
            Ok(out) => Ok(out.table().cloned()),
            Err(e) if e.code == "EntityNotFoundException" => Ok(None),
            Err(e) => Err(self.call_err("GetTable", e)),
        }
    }

    /// An existing table must be partitioned like the files: other keys would
    /// make every registered partition (and every query) wrong.
    fn check_keys(&self, t: &Table, schema: Option<&Schema>) -> Result<(), CatalogError> {
        let theirs: Vec<(String, String)> = t
            .partition_keys()
            .iter()
            .map(|c| (c.name().to_owned(), c.r#type().unwrap_or("").to_owned()))
            .collect();
        let names_differ = theirs.iter().map(|(n, _)| n.as_str()).ne(self
            .sink
            .partition_by
            .iter()
            .map(String::as_str));
        let ours = schema.map(|s| ddl::table_columns(&self.sink, s).1);
        let types_differ = ours.as_ref().is_some_and(|o| *o != theirs);
        if names_differ || types_differ {
            let show = |v: &[(String, String)]| {
                v.iter()
                    .map(|(n, t)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ours = ours.map_or_else(|| self.sink.partition_by.join(", "), |o| show(&o));
            return Err(self.conflict(format!(
                "the table exists with partition keys ({}) but the sink is partitioned by ({ours}); drop the table or name another one",
                show(&theirs)
            )));
        }
        Ok(())
    }

    fn table_input(&self, schema: &Schema, location: &str) -> Result<TableInput, CatalogError> {
        let (data, parts) = ddl::table_columns(&self.sink, schema);
        let column = |(name, ty): &(String, String)| {
            Column::builder()
                .name(name)
                .r#type(ty)
                .build()
                .map_err(|e| self.conflict(e.to_string()))
        };
        let mut sd = storage(location);
        for c in &data {
            sd = sd.columns(column(c)?);
        }
        let mut t = TableInput::builder()
            .name(&self.spec.table)
            .table_type("EXTERNAL_TABLE")
            .parameters("classification", "parquet")
            .parameters("EXTERNAL", "TRUE")
            .parameters(
                "parquet.compression",
                self.sink.compression.table_property(),
            )
            .storage_descriptor(sd.build());
        for c in &parts {
            t = t.partition_keys(column(c)?);
        }
        t.build().map_err(|e| self.conflict(e.to_string()))
    }

    /// Creates the table, or updates it when its columns or location differ
    /// from the sink's (not on every start: each update is a table version).
    async fn put_table(
        &mut self,
        existing: Option<&Table>,
        schema: &Schema,
        location: &str,
    ) -> Result<(), CatalogError> {
        let input = self.table_input(schema, location)?;
        let current = match existing {
            Some(t) => t.clone(),
            None => match self.create_table(&input).await {
                Ok(()) => {
                    tracing::info!(table = %self.name(), %location, "created the Glue table");
                    self.table_ready = true;
                    return Ok(());
                }
                // Another instance was first: judge its definition.
                Err(e) if e.code == "AlreadyExistsException" => {
                    let t = self
                        .get_table()
                        .await?
                        .ok_or_else(|| self.conflict("created and gone again".into()))?;
                    self.check_keys(&t, Some(schema))?;
                    t
                }
                Err(e) => return Err(self.call_err("CreateTable", e)),
            },
        };
        let cols = |s: Option<&StorageDescriptor>| {
            s.map(|s| {
                s.columns()
                    .iter()
                    .map(|c| (c.name().to_owned(), c.r#type().map(str::to_owned)))
                    .collect::<Vec<_>>()
            })
        };
        let (have, want) = (current.storage_descriptor(), input.storage_descriptor());
        if cols(have) != cols(want)
            || have.and_then(|s| s.location()) != want.and_then(|s| s.location())
        {
            let client = self.client().await?;
            let db = &self.spec.database;
            self.retry
                .retry(
                    |_| {
                        let input = input.clone();
                        async move {
                            client
                                .update_table()
                                .database_name(db)
                                .table_input(input)
                                .send()
                                .await
                                .map_err(|e| classify(&e))
                        }
                    },
                    |e: &CallError| e.retryable,
                )
                .await
                .map_err(|e| self.call_err("UpdateTable", e))?;
            tracing::info!(table = %self.name(), %location, "updated the Glue table's columns and location");
        }
        self.table_ready = true;
        Ok(())
    }

    async fn create_table(&self, input: &TableInput) -> Result<(), CallError> {
        let client = self.client().await.map_err(|e| CallError {
            code: String::new(),
            retryable: false,
            message: e.to_string(),
        })?;
        let db = &self.spec.database;
        self.retry
            .retry(
                |_| {
                    let input = input.clone();
                    async move {
                        client
                            .create_table()
                            .database_name(db)
                            .table_input(input)
                            .send()
                            .await
                            .map_err(|e| classify(&e))
                    }
                },
                |e: &CallError| e.retryable,
            )
            .await
            .map(|_| ())
    }

    /// Registers the partitions of committed files (`keys` relative to the
    /// table root) not registered yet this run.
    pub(crate) async fn register<'a>(
        &mut self,
        schema: &Schema,
        location: &str,
        keys: impl Iterator<Item = &'a str>,
    ) -> Result<(), CatalogError> {
        if self.sink.partition_by.is_empty() {
            if !self.table_ready {
                let existing = self.get_table().await?;
                self.put_table(existing.as_ref(), schema, location).await?;
            }
            return Ok(());
        }
        let dirs: BTreeSet<String> = keys
            .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d.to_owned()))
            .filter(|d| !self.registered.contains(d))
            .collect();
        if dirs.is_empty() {
            return Ok(());
        }
        if !self.table_ready {
            let existing = self.get_table().await?;
            if let Some(t) = &existing {
                self.check_keys(t, Some(schema))?;
            }
            self.put_table(existing.as_ref(), schema, location).await?;
        }
        let dirs: Vec<String> = dirs.into_iter().collect();
        for wave in dirs.chunks(BATCH) {
            let inputs: Vec<PartitionInput> = wave
                .iter()
                .map(|d| {
                    PartitionInput::builder()
                        .set_values(Some(partition_values(d)))
                        .storage_descriptor(
                            storage(&format!("{}{d}/", with_slash(location))).build(),
                        )
                        .build()
                })
                .collect();
            self.create_partitions(inputs).await?;
            self.registered.extend(wave.iter().cloned());
            tracing::debug!(table = %self.name(), partitions = wave.len(), "registered Glue partitions");
        }
        Ok(())
    }

    /// One BatchCreatePartition, retried as a whole while any entry failed
    /// for a transient reason (sending an entry again is `AlreadyExists`).
    async fn create_partitions(&self, inputs: Vec<PartitionInput>) -> Result<(), CatalogError> {
        let client = self.client().await?;
        let r = self
            .retry
            .retry(
                |_| {
                    let inputs = inputs.clone();
                    async move {
                        let out = client
                            .batch_create_partition()
                            .database_name(&self.spec.database)
                            .table_name(&self.spec.table)
                            .set_partition_input_list(Some(inputs))
                            .send()
                            .await
                            .map_err(|e| classify(&e))?;
                        let failed: Vec<CallError> = out
                            .errors()
                            .iter()
                            .filter_map(|pe| {
                                let code = pe
                                    .error_detail()
                                    .and_then(|d| d.error_code())
                                    .unwrap_or("")
                                    .to_owned();
                                (code != "AlreadyExistsException").then(|| {
                                    let message = pe
                                        .error_detail()
                                        .and_then(|d| d.error_message())
                                        .unwrap_or("");
                                    CallError {
                                        retryable: retryable_code(&code),
                                        message: format!(
                                            "partition {:?}: {code} {message}",
                                            pe.partition_values()
                                        ),
                                        code,
                                    }
                                })
                            })
                            .collect();
                        match failed
                            .iter()
                            .position(|e| !e.retryable)
                            .or((!failed.is_empty()).then_some(0))
                        {
                            Some(i) => Err(failed.into_iter().nth(i).expect("an index of failed")),
                            None => Ok(()),
                        }
                    }
                },
                |e: &CallError| e.retryable,
            )
            .await;
        r.map_err(|e| self.call_err("BatchCreatePartition", e))
    }
}

/// The table's location as a URL Glue and Athena take: `s3://...` as is, a
/// local directory as `file:///abs/path/`.
pub(crate) fn location_url(location: &str) -> String {
    let url = if location.contains("://") {
        location.to_owned()
    } else {
        format!("file://{location}")
    };
    with_slash(&url)
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

fn storage(location: &str) -> aws_sdk_glue::types::builders::StorageDescriptorBuilder {
    StorageDescriptor::builder()
        .location(location)
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(SERDE)
                .parameters("serialization.format", "1")
                .build(),
        )
}

/// The values of a partition directory `a=1/b=x%2Fy`: Hive's escaping undone
/// (the catalog holds values, the location the escaped path).
fn partition_values(dir: &str) -> Vec<String> {
    dir.split('/')
        .map(|seg| unescape(seg.split_once('=').map_or(seg, |(_, v)| v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| {
                std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_unescaped() {
        assert_eq!(
            partition_values("region=eu%2Fwest/day=2024-01-02"),
            vec!["eu/west", "2024-01-02"]
        );
        assert_eq!(partition_values("month=03"), vec!["03"]);
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(location_url("/data/t"), "file:///data/t/");
        assert_eq!(location_url("s3://b/p/"), "s3://b/p/");
    }
}
