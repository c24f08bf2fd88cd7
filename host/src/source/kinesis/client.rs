//! The Kinesis client (shared by the source and `sluice produce`) and the
//! classification of its errors into what a caller does about them.

use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_types::event_stream::RawMessage;

/// Region used with an endpoint override when nothing else names one.
pub use crate::aws::EMULATOR_REGION;

/// Builds a client from the AWS default chain (environment, profile, IMDS),
/// with `region`/`endpoint` overrides (see `crate::aws`).
pub async fn build(region: Option<String>, endpoint: Option<&str>) -> Result<aws_sdk_kinesis::Client, String> {
    // Emulators answer GetRecords slowly on full shards; real Kinesis in milliseconds.
    let shared = crate::aws::sdk_config(region, endpoint, Duration::from_secs(60)).await?;
    Ok(aws_sdk_kinesis::Client::new(&shared))
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Over a limit (ProvisionedThroughputExceeded, LimitExceeded, 429): back
    /// off and retry, without an attempt limit.
    Throttled,
    /// Network, timeout, 5xx: retry within the policy.
    Transient,
    /// The shard iterator is older than 5 minutes: get a new one.
    ExpiredIterator,
    /// Stream, shard or consumer does not exist.
    NotFound,
    /// Resource busy (consumer being created, subscription slot still taken).
    InUse,
    /// The endpoint does not implement the operation (emulators without EFO).
    Unsupported,
    /// InvalidArgumentException. On a read from a sequence number this is what
    /// the service answers when that number is older than the trim horizon
    /// (GetShardIterator / SubscribeToShard with AFTER/AT_SEQUENCE_NUMBER):
    /// the reader falls back to TRIM_HORIZON. Anywhere else it is fatal.
    InvalidArgument,
    /// Anything else (access denied, invalid argument): retrying will not help.
    Fatal,
}

#[derive(Debug, Clone)]
pub struct CallError {
    pub kind: ErrorKind,
    /// Service error code, when the service answered.
    pub code: Option<String>,
    /// Full message with the chain of causes (never credentials: the SDK redacts them).
    pub message: String,
}

impl CallError {
    pub fn retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::InUse)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Raw responses that may carry an HTTP status.
pub trait MaybeStatus {
    fn status(&self) -> Option<u16>;
}
impl MaybeStatus for HttpResponse {
    fn status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}
impl MaybeStatus for RawMessage {
    fn status(&self) -> Option<u16> {
        None
    }
}

pub fn classify<E, R>(err: &SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: MaybeStatus + std::fmt::Debug,
{
    let message = DisplayErrorContext(err).to_string();
    let (kind, code) = match err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().map(str::to_string);
            (kind_of(code.as_deref(), ctx.raw().status()), code)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (ErrorKind::Transient, None),
        _ => (ErrorKind::Fatal, None),
    };
    CallError { kind, code, message }
}

/// From a service error code (and HTTP status, for unmodeled answers).
pub fn kind_of(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    match code.unwrap_or("") {
        "ProvisionedThroughputExceededException" | "LimitExceededException" | "ThrottlingException" | "KMSThrottlingException"
        | "Throttling" | "RequestLimitExceeded" | "SlowDown" => ErrorKind::Throttled,
        "ExpiredIteratorException" => ErrorKind::ExpiredIterator,
        "ResourceNotFoundException" => ErrorKind::NotFound,
        "ResourceInUseException" => ErrorKind::InUse,
        "InvalidArgumentException" => ErrorKind::InvalidArgument,
        "UnknownOperationException" | "UnknownOperation" | "InvalidAction" | "NotImplemented" | "NotImplementedException" => {
            ErrorKind::Unsupported
        }
        "InternalFailure" | "InternalFailureException" | "InternalError" | "InternalServerError" | "ServiceUnavailable"
        | "ServiceUnavailableException" | "KMSInternalException" | "RequestTimeout" | "RequestTimeoutException" => {
            ErrorKind::Transient
        }
        _ => match status {
            Some(429) => ErrorKind::Throttled,
            Some(501) => ErrorKind::Unsupported,
            Some(s) if s >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Fatal,
        },
    }
}

/// A stream as the API takes it: by name or by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamId {
    Name(String),
    Arn(String),
}

impl StreamId {
    pub fn parse(s: &str) -> Self {
        if s.starts_with("arn:") {
            StreamId::Arn(s.to_string())
        } else {
            StreamId::Name(s.to_string())
        }
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            StreamId::Name(n) => Some(n),
            StreamId::Arn(_) => None,
        }
    }
    pub fn arn(&self) -> Option<&str> {
        match self {
            StreamId::Arn(a) => Some(a),
            StreamId::Name(_) => None,
        }
    }
    pub fn name_owned(&self) -> Option<String> {
        self.name().map(str::to_string)
    }
    pub fn arn_owned(&self) -> Option<String> {
        self.arn().map(str::to_string)
    }
    /// The bare stream name (the last ARN component for an ARN).
    pub fn short_name(&self) -> &str {
        match self {
            StreamId::Name(n) => n,
            StreamId::Arn(a) => a.rsplit('/').next().unwrap_or(a),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamId::Name(n) | StreamId::Arn(n) => f.write_str(n),
        }
    }
}

/// Wall-clock milliseconds since the epoch of an SDK timestamp.
pub fn epoch_ms(t: &aws_smithy_types::DateTime) -> Option<i64> {
    t.to_millis().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of(Some("ProvisionedThroughputExceededException"), Some(400)), ErrorKind::Throttled);
        assert_eq!(kind_of(Some("ExpiredIteratorException"), Some(400)), ErrorKind::ExpiredIterator);
        assert_eq!(kind_of(Some("ResourceNotFoundException"), Some(400)), ErrorKind::NotFound);
        assert_eq!(kind_of(None, Some(503)), ErrorKind::Transient);
        assert_eq!(kind_of(Some("Whatever"), Some(500)), ErrorKind::Transient);
        assert_eq!(kind_of(Some("AccessDeniedException"), Some(400)), ErrorKind::Fatal);
        assert_eq!(kind_of(None, Some(429)), ErrorKind::Throttled);
        assert_eq!(kind_of(Some("InvalidArgumentException"), Some(400)), ErrorKind::InvalidArgument);
    }

    #[test]
    fn stream_ids() {
        let a = StreamId::parse("arn:aws:kinesis:us-east-1:000000000000:stream/taxi");
        assert_eq!((a.arn().is_some(), a.short_name()), (true, "taxi"));
        let n = StreamId::parse("taxi");
        assert_eq!((n.name(), n.short_name()), (Some("taxi"), "taxi"));
    }
}
