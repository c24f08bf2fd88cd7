//! Which stream the source reads, and under which consumer name.
//!
//! A stream deleted and re-created under the same name numbers its shards
//! from `shardId-000000000000` again: positions and finished ids of the old
//! one would match new shards (finished ones would never be read). The state
//! keeps the stream ARN and creation time, and a mismatch stops the source.

use aws_sdk_kinesis::Client;

use super::client::{self, CallError, ErrorKind, StreamId};
use super::position::SourceState;

/// Which incarnation of the stream this is.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub arn: String,
    pub created_ms: Option<i64>,
    /// `ACTIVE`, `UPDATING`, `CREATING`, `DELETING`.
    pub status: String,
}

pub(crate) async fn describe(client: &Client, stream: &StreamId, retry: &crate::retry::RetryPolicy) -> Result<Identity, CallError> {
    let out = retry
        .retry(
            |_| async {
                client
                    .describe_stream_summary()
                    .set_stream_name(stream.name_owned())
                    .set_stream_arn(stream.arn_owned())
                    .send()
                    .await
                    .map_err(|e| client::classify(&e))
            },
            CallError::retryable,
        )
        .await?;
    let d = out.stream_description_summary().ok_or_else(|| CallError {
        kind: ErrorKind::Fatal,
        code: None,
        message: format!("DescribeStreamSummary of {stream} returned no description"),
    })?;
    Ok(Identity {
        arn: d.stream_arn().to_string(),
        created_ms: client::epoch_ms(d.stream_creation_timestamp()),
        status: d.stream_status().as_str().to_string(),
    })
}

/// A checkpoint of another incarnation of the stream (deleted and re-created
/// under the same name: shard ids start over, so its finished ids would
/// match new shards that would then never be read) is refused. States
/// written before the identity was kept get it now.
pub(crate) fn check_identity(mut s: SourceState, id: &Identity) -> Result<SourceState, String> {
    let arn_differs = s.stream_arn.as_ref().is_some_and(|a| a != &id.arn);
    let created_differs = matches!((s.created_ms, id.created_ms), (Some(a), Some(b)) if a != b);
    if arn_differs || created_differs {
        return Err(format!(
            "the checkpoint belongs to stream {} created at {} ms, but {} was created at {} ms: the stream was deleted and \
             re-created (its shard ids start over, so resuming would skip new shards); delete the checkpoint \
             (or point `checkpoint.dir` elsewhere) to read the new stream from its start position",
            s.stream_arn.as_deref().unwrap_or(&s.stream),
            s.created_ms.map_or("?".to_string(), |t| t.to_string()),
            id.arn,
            id.created_ms.map_or("?".to_string(), |t| t.to_string()),
        ));
    }
    s.stream_arn = Some(id.arn.clone());
    s.created_ms = s.created_ms.or(id.created_ms);
    Ok(s)
}

/// `sluice-<pipeline>-<source>`: unique per pipeline, so two pipelines (or
/// deployments with different pipeline names) reading one stream never take
/// each other's subscriptions (a newer SubscribeToShard for the same consumer
/// and shard ends the older one).
pub(crate) fn default_consumer_name(pipeline: &str, source: &str) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect::<String>();
    format!("sluice-{}-{}", clean(pipeline), clean(source)).chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_mismatch_is_refused_and_old_states_adopt_it() {
        let id = Identity { arn: "arn:aws:kinesis:us-east-1:1:stream/s".into(), created_ms: Some(2_000), status: "ACTIVE".into() };
        let old = SourceState { v: 1, stream: "s".into(), ..Default::default() };
        let s = check_identity(old, &id).unwrap();
        assert_eq!((s.stream_arn.as_deref(), s.created_ms), (Some(id.arn.as_str()), Some(2_000)));
        let recreated = Identity { created_ms: Some(3_000), ..id.clone() };
        assert!(check_identity(s.clone(), &recreated).unwrap_err().contains("deleted and re-created"));
        let other = Identity { arn: "arn:aws:kinesis:eu-west-1:1:stream/s".into(), created_ms: Some(2_000), ..id.clone() };
        assert!(check_identity(s, &other).is_err());
    }

    #[test]
    fn default_consumer_names_include_the_pipeline() {
        assert_eq!(default_consumer_name("taxi ingest", "trips"), "sluice-taxi-ingest-trips");
        assert_eq!(default_consumer_name(&"p".repeat(200), "t").len(), 128);
    }
}
