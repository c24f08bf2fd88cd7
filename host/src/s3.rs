//! What every S3 user in sluice shares: `s3://bucket/prefix` URLs, the client
//! (default credential chain, endpoint overrides, path-style addressing for
//! emulators) and the classification of failed calls (conflict, not found,
//! retryable, or a permanent error with a hint naming bucket and prefix).
//! The checkpoint store and the Parquet/DLQ sink backends use it; the retry
//! loop around one call is `crate::retry`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use serde::Deserialize;

/// Region used with an endpoint override when the chain names none (emulators accept any).
const FALLBACK_REGION: &str = "us-east-1";

/// Where an `s3://bucket/prefix` URL points. `prefix` has no leading or trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(format!("{url:?}: bucket name {bucket:?} is not valid (3-63 characters: a-z, 0-9, '-', '.'); write s3://bucket/prefix"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|s| s.is_empty() && !prefix.is_empty())
        {
            return Err(format!(
                "{url:?}: the prefix has an empty path segment (`//`)"
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Whether `other` is this location or inside it (a prefix of whole segments).
    pub fn contains(&self, other: &S3Url) -> bool {
        self.bucket == other.bucket
            && (self.prefix.is_empty()
                || other.prefix == self.prefix
                || other
                    .prefix
                    .strip_prefix(&self.prefix)
                    .is_some_and(|r| r.starts_with('/')))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Per-destination client settings (a sink's `region` and `endpoint` keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

/// Builds a client from the AWS default chain (credentials, region, the
/// standard `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variables), then
/// `SLUICE_S3_ENDPOINT`, then `opts`. Any endpoint override turns on
/// path-style addressing, which emulators (LocalStack, moto, MinIO) need.
/// Checksums only where an operation requires them: LocalStack refuses the
/// SDK's default CRC32 on multipart parts. SDK retries are off: callers
/// retry one idempotent call with `crate::retry`.
pub async fn client(opts: &ClientOptions) -> aws_sdk_s3::Client {
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| std::env::var("SLUICE_S3_ENDPOINT").ok())
        .filter(|s| !s.is_empty());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(ep) = &endpoint {
        loader = loader.endpoint_url(ep);
    }
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    let shared = loader.load().await;
    let overridden = endpoint.is_some()
        || ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    let mut conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(overridden)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    if shared.region().is_none() {
        conf = conf.region(Region::new(FALLBACK_REGION));
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

/// A client from the default chain with no per-destination settings.
pub async fn client_from_env() -> aws_sdk_s3::Client {
    client(&ClientOptions::default()).await
}

/// Server-side encryption (`sse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Sse {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    Kms,
}

/// How objects are written: encryption, storage class, tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    pub sse: Option<Sse>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl ObjectOptions {
    /// `k1=v1&k2=v2`, URL-encoded, as the `x-amz-tagging` header wants it.
    pub fn tagging(&self) -> Option<String> {
        if self.tags.is_empty() {
            return None;
        }
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        Some(
            self.tags
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&"),
        )
    }

    pub fn sse(&self) -> Option<ServerSideEncryption> {
        self.sse.map(|s| match s {
            Sse::Aes256 => ServerSideEncryption::Aes256,
            Sse::Kms => ServerSideEncryption::AwsKms,
        })
    }

    /// A storage class the SDK knows, or an error naming the valid ones.
    pub fn check(&self) -> Result<(), String> {
        if let Some(c) = &self.storage_class {
            if !StorageClass::values().contains(&c.as_str()) {
                return Err(format!(
                    "storage_class {c:?} is not an S3 storage class ({})",
                    StorageClass::values().join(", ")
                ));
            }
        }
        if self.kms_key_id.is_some() && self.sse != Some(Sse::Kms) {
            return Err("kms_key_id needs sse = \"aws:kms\"".into());
        }
        Ok(())
    }
}

/// The keys of an `s3://` destination, as the Parquet sink and the DLQ
/// declare them (each table lists them itself: serde's `flatten` would
/// defeat `deny_unknown_fields`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Keys {
    /// The bucket's region (default: the AWS configuration's).
    pub region: Option<String>,
    /// Another S3 endpoint (LocalStack, MinIO); turns on path-style addressing.
    /// Default: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// Server-side encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse: Option<Sse>,
    /// The KMS key for `sse = "aws:kms"` (default: the account's S3 key).
    pub kms_key_id: Option<String>,
    /// `STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, ...
    pub storage_class: Option<String>,
    /// Object tags.
    pub tags: BTreeMap<String, String>,
}

impl S3Keys {
    pub fn is_empty(&self) -> bool {
        *self == S3Keys::default()
    }
    pub fn client(&self) -> ClientOptions {
        ClientOptions {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
    pub fn objects(&self) -> ObjectOptions {
        ObjectOptions {
            sse: self.sse,
            kms_key_id: self.kms_key_id.clone(),
            storage_class: self.storage_class.clone(),
            tags: self.tags.clone(),
        }
    }
    /// What `path` with these keys is refused for, with the key to blame.
    pub fn check(&self, path: &str) -> Result<(), (Option<&'static str>, String)> {
        if !path.starts_with("s3://") {
            if self.is_empty() {
                return Ok(());
            }
            let key = [
                (self.region.is_some(), "region"),
                (self.endpoint.is_some(), "endpoint"),
                (self.sse.is_some(), "sse"),
                (self.kms_key_id.is_some(), "kms_key_id"),
                (self.storage_class.is_some(), "storage_class"),
                (!self.tags.is_empty(), "tags"),
            ]
            .into_iter()
            .find_map(|(set, k)| set.then_some(k));
            return Err((
                key,
                format!("applies to s3:// paths only, and path {path:?} is local"),
            ));
        }
        S3Url::parse(path).map_err(|m| (Some("path"), m))?;
        self.objects().check().map_err(|m| {
            (
                Some(if m.contains("kms") {
                    "kms_key_id"
                } else {
                    "storage_class"
                }),
                m,
            )
        })
    }
}

/// One failed S3 call, classified.
#[derive(Debug, Clone)]
pub struct CallError {
    /// 412 / 409: a conditional write lost against another writer.
    pub conflict: bool,
    pub not_found: bool,
    pub retryable: bool,
    /// The service's error code (`NoSuchUpload`, `AccessDenied`, ...), if any.
    pub code: String,
    pub message: String,
}

impl CallError {
    /// A failure outside the SDK call (a body stream broke): worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        CallError {
            conflict: false,
            not_found: false,
            retryable: true,
            code: String::new(),
            message: message.into(),
        }
    }

    /// What to do about a permanent failure on `url`, for messages.
    pub fn hint(&self, url: &S3Url, key_name: &str) -> String {
        let m = &self.message;
        if self.code == "NoSuchBucket" || m.contains("NoSuchBucket") {
            format!(
                "bucket {} does not exist; create it or fix `{key_name}`",
                url.bucket
            )
        } else if self.code == "AccessDenied"
            || [
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "credentials",
            ]
            .iter()
            .any(|w| m.contains(w))
        {
            format!("check the AWS credentials and that they may read and write {url}")
        } else if self.retryable {
            "S3 (or the configured endpoint) is not reachable or failing; check the endpoint and network".into()
        } else {
            format!("check the bucket, prefix and credentials of {url}")
        }
    }
}

/// Classifies a failed SDK call: network errors, timeouts, 5xx, SlowDown and
/// throttling are retryable; conflicts and client errors are not.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    let (code, status) = match err {
        SdkError::ServiceError(ctx) => (
            ctx.err().code().map(str::to_string),
            Some(ctx.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return CallError {
                conflict: false,
                not_found: false,
                retryable: true,
                code: String::new(),
                message,
            };
        }
        // Construction failures (missing credentials, bad endpoint) never fix themselves.
        _ => (None, None),
    };
    let code = code.unwrap_or_default();
    let conflict = matches!(
        code.as_str(),
        "PreconditionFailed" | "ConditionalRequestConflict"
    ) || matches!(status, Some(412 | 409));
    let not_found = matches!(code.as_str(), "NoSuchKey" | "NotFound")
        || (status == Some(404) && code != "NoSuchBucket");
    let retryable = !conflict
        && (matches!(
            code.as_str(),
            "SlowDown"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeTooSkewed"
        ) || matches!(status, Some(429 | 500..=599)) && status != Some(501));
    CallError {
        conflict,
        not_found,
        retryable,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(
            u,
            S3Url {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(u.key("checkpoint.json"), "a/b/checkpoint.json");
        assert_eq!(u.to_string(), "s3://my-bucket/a/b");
        let root = S3Url::parse("s3://bkt").unwrap();
        assert_eq!(
            (root.prefix.as_str(), root.key("LOCK")),
            ("", "LOCK".to_string())
        );
        assert_eq!(S3Url::parse("s3://bkt/").unwrap().key("x"), "x");
        for bad in [
            "s3://",
            "s3://Upper/x",
            "s3://ab/x",
            "file:///tmp",
            "s3://b_k/x",
            "s3://bkt/a//b",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn containment_is_by_whole_segments() {
        let p = |s: &str| S3Url::parse(s).unwrap();
        assert!(p("s3://bkt/a").contains(&p("s3://bkt/a/b")));
        assert!(p("s3://bkt/a").contains(&p("s3://bkt/a/")));
        assert!(p("s3://bkt").contains(&p("s3://bkt/x")));
        assert!(!p("s3://bkt/a").contains(&p("s3://bkt/ab")));
        assert!(!p("s3://bkt/a/b").contains(&p("s3://bkt/a")));
        assert!(!p("s3://bkt/a").contains(&p("s3://cat/a")));
    }

    #[test]
    fn tags_are_url_encoded_and_options_checked() {
        let mut o = ObjectOptions::default();
        o.tags.insert("team".into(), "data eng".into());
        o.tags.insert("k&".into(), "v=1".into());
        assert_eq!(o.tagging().as_deref(), Some("k%26=v%3D1&team=data%20eng"));
        o.storage_class = Some("STANDARD_IA".into());
        o.check().unwrap();
        o.storage_class = Some("FAST".into());
        assert!(o.check().unwrap_err().contains("FAST"));
        let k = ObjectOptions {
            kms_key_id: Some("k".into()),
            ..Default::default()
        };
        assert!(k.check().unwrap_err().contains("aws:kms"));
    }
}
