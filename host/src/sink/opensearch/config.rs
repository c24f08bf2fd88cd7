//! `[sinks.NAME]` with `type = "opensearch"`: the keys and what `validate`
//! checks about them without contacting the cluster.

use std::time::Duration;

use serde::Deserialize;

use super::index::IndexPattern;
use crate::config::units::{ByteSize, Dur};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSearchSinkSpec {
    pub inputs: Vec<String>,
    /// Base URLs of the cluster's nodes (`http://127.0.0.1:9200`); requests
    /// go to them in turn.
    pub endpoints: Vec<String>,
    /// Target index; `{field}` or `{field:%Y.%m}` take (a date formatted
    /// from) a field of each record, e.g. `"trips-{dropoff_datetime:%Y.%m}"`.
    pub index: String,
    /// The record field whose value is the document `_id` (aggregates: their
    /// own key). Default: an id derived from the record's provenance.
    #[serde(default)]
    pub id_field: Option<String>,
    /// A JSON index template (`index_patterns`, `template.mappings`, ...)
    /// put as `_index_template/<template_name>` at every start.
    #[serde(default)]
    pub template: Option<String>,
    /// Name of the index template. Default: the sink's name.
    #[serde(default)]
    pub template_name: Option<String>,
    /// Documents per bulk request.
    #[serde(default = "default_bulk_records")]
    pub bulk_max_records: usize,
    /// Bytes (uncompressed NDJSON) per bulk request.
    #[serde(default = "default_bulk_bytes")]
    pub bulk_max_bytes: ByteSize,
    /// Bulk requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Send bulk bodies gzip-compressed.
    #[serde(default)]
    pub gzip: bool,
    /// Timeout of one request.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Longest wait between two retries while the cluster is unavailable or
    /// throttling (the sink keeps retrying: the pipeline stalls, then catches up).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    /// Basic authentication (usually `${OPENSEARCH_USER}` / `${OPENSEARCH_PASSWORD}`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Password>,
    /// AWS SigV4 signing (Amazon OpenSearch Service), credentials from the
    /// default chain.
    #[serde(default)]
    pub aws: Option<AwsSpec>,
    #[serde(default)]
    pub tls: TlsSpec,
}

fn default_bulk_records() -> usize {
    1000
}
fn default_bulk_bytes() -> ByteSize {
    ByteSize(5 << 20)
}
fn default_concurrency() -> usize {
    2
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_max_backoff() -> Dur {
    Dur(Duration::from_secs(10))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSpec {
    /// Region of the domain; default: the default chain's region.
    #[serde(default)]
    pub region: Option<String>,
    /// `es` (managed domains) or `aoss` (serverless).
    #[serde(default = "default_service")]
    pub service: String,
}

fn default_service() -> String {
    "es".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file of the CA that signed the cluster's certificate.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Accept any certificate (test clusters only).
    #[serde(default)]
    pub insecure: bool,
}

/// A password: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl OpenSearchSinkSpec {
    /// The first configuration problem, with the key it is about.
    pub fn check_keyed(&self) -> Result<(), (Option<&'static str>, String)> {
        if self.endpoints.is_empty() {
            return Err((
                Some("endpoints"),
                "endpoints must list at least one URL, e.g. [\"http://127.0.0.1:9200\"]".into(),
            ));
        }
        for e in &self.endpoints {
            let u = opensearch::http::Url::parse(e).map_err(|err| {
                (
                    Some("endpoints"),
                    format!("{e:?} is not a URL ({err}); write e.g. \"http://127.0.0.1:9200\""),
                )
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err((
                    Some("endpoints"),
                    format!("{e:?}: the scheme must be http or https"),
                ));
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err((
                    Some("endpoints"),
                    "put credentials in username/password, not in the URL (URLs appear in logs)"
                        .into(),
                ));
            }
        }
        IndexPattern::parse(&self.index).map_err(|m| (Some("index"), m))?;
        if let Some(f) = &self.id_field {
            if f.is_empty() {
                return Err((Some("id_field"), "id_field must name a field".into()));
            }
        }
        if self.bulk_max_records == 0 {
            return Err((
                Some("bulk_max_records"),
                "bulk_max_records must be positive".into(),
            ));
        }
        if self.bulk_max_bytes.0 == 0 {
            return Err((
                Some("bulk_max_bytes"),
                "bulk_max_bytes must be positive".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err((Some("concurrency"), "concurrency must be positive".into()));
        }
        if self.timeout.0.is_zero() {
            return Err((Some("timeout"), "timeout must be positive".into()));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => return Err((Some("username"), "username needs a password".into())),
            (None, Some(_)) => return Err((Some("password"), "password needs a username".into())),
            _ => {}
        }
        if self.aws.is_some() && self.username.is_some() {
            return Err((
                Some("aws"),
                "choose one authentication: aws (SigV4) or username/password".into(),
            ));
        }
        if let Some(ca) = &self.tls.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| (Some("tls"), format!("cannot read tls.ca_file {ca}: {e}")))?;
            opensearch::cert::Certificate::from_pem(&pem).map_err(|e| {
                (
                    Some("tls"),
                    format!("tls.ca_file {ca} is not a PEM certificate: {e}"),
                )
            })?;
        }
        if let Some(t) = &self.template {
            super::template::load(t, self.template_name.as_deref().unwrap_or("x"))
                .map_err(|m| (Some("template"), m))?;
        }
        if let Some(n) = &self.template_name {
            if n.is_empty() || n.contains(['/', ' ', '?', '#']) || n.to_lowercase() != *n {
                return Err((
                    Some("template_name"),
                    format!(
                        "{n:?} is not a valid template name (lowercase, no '/', ' ', '?', '#')"
                    ),
                ));
            }
        }
        Ok(())
    }
}
