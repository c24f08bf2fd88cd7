//! The AWS SDK configuration every client of the host starts from: the
//! default credential chain (environment, profile, IMDS), `region`/`endpoint`
//! overrides, SDK-level retries off (callers retry with
//! `crate::retry::RetryPolicy`, so there is one policy to reason about).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Region used with an endpoint override when nothing else names one:
/// emulators (LocalStack, moto, kinesis-local) accept any region and default to this.
pub const EMULATOR_REGION: &str = "us-east-1";

/// The shared configuration; `attempt_timeout` bounds one call. Without a
/// region from anywhere it is an error, unless an endpoint is overridden
/// (an emulator): then [`EMULATOR_REGION`].
pub(crate) async fn sdk_config(
    region: Option<String>,
    endpoint: Option<&str>,
    attempt_timeout: Duration,
) -> Result<SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(Region::new(r));
    }
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
    }
    let shared = loader.load().await;
    if shared.region().is_some() {
        return Ok(shared);
    }
    if endpoint.is_none() {
        return Err(
            "no AWS region: set `region` (or --region), AWS_REGION, or a profile region".into(),
        );
    }
    Ok(shared
        .into_builder()
        .region(Region::new(EMULATOR_REGION))
        .build())
}
