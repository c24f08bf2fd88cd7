//! `type = "kinesis"` source settings.
//!
//! ```toml
//! [sources.trips]
//! type = "kinesis"
//! stream = "taxi-trips"            # or the stream ARN
//! region = "us-east-1"             # default: the AWS chain (or the ARN's region)
//! endpoint = "http://127.0.0.1:4566"
//! start_position = "trim_horizon"  # latest | trim_horizon | at_timestamp (+ timestamp)
//! mode = "polling"                 # polling | efo | auto
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::config::units::Dur;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Only records written after the source first starts.
    #[default]
    Latest,
    /// The oldest records still in the stream.
    TrimHorizon,
    /// Records written at or after `timestamp`.
    AtTimestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// GetRecords loops (shared 2 MB/s per shard with other consumers).
    #[default]
    Polling,
    /// Enhanced fan-out: SubscribeToShard pushes (dedicated 2 MB/s per consumer).
    Efo,
    /// Enhanced fan-out when the endpoint supports it, polling otherwise.
    Auto,
}

/// How records are decoded. Records are JSON documents (one per record, or per
/// sub-record of a KPL aggregate); the source does not parse them, stages do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    #[default]
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceSpec {
    /// Stream name or ARN.
    pub stream: String,
    pub region: Option<String>,
    /// Endpoint override (LocalStack, kinesis-local).
    pub endpoint: Option<String>,
    /// Where to start when there is no checkpoint.
    #[serde(default)]
    pub start_position: StartPosition,
    /// RFC 3339, with `start_position = "at_timestamp"`.
    pub timestamp: Option<String>,
    #[serde(default)]
    pub mode: ReadMode,
    /// EFO consumer name; default `sluice-<pipeline name>-<source name>`.
    pub consumer_name: Option<String>,
    /// A SubscribeToShard subscription lasts 5 minutes; each shard renews its
    /// own this long after subscribing, from the last continuation sequence
    /// number (1s..=5m).
    #[serde(default = "default_fan_out_renew_after")]
    pub fan_out_renew_after: Dur,
    /// An open subscription gets an event every few seconds (an empty one when
    /// nothing is new). Nothing for this long means a half-open connection:
    /// resubscribe from the last continuation (1s..=5m).
    #[serde(default = "default_fan_out_idle_timeout")]
    pub fan_out_idle_timeout: Dur,
    /// Drop KPL sub-records whose hash key (explicit, or MD5 of the partition
    /// key) lies outside the shard's hash-key range, as the KCL does. Only
    /// right when every aggregating producer re-sends misrouted sub-records
    /// (the KPL does; aws-kinesis-agg and other aggregators do not, and
    /// filtering would lose their records). Off: nothing is dropped, and the
    /// KPL's re-sends around a reshard arrive twice.
    #[serde(default)]
    pub kpl_hash_range_filter: bool,
    /// Records per GetRecords call (1..=10000).
    #[serde(default = "default_poll_limit")]
    pub poll_limit: u32,
    /// Wait between GetRecords calls on a shard that returned nothing.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Dur,
    /// Read budget per shard for this consumer (Kinesis allows 2 MB/s per
    /// shard across all polling consumers). "0" turns pacing off: for a
    /// stream with one consumer or an emulator that enforces no limit.
    #[serde(default = "default_read_bytes_per_sec")]
    pub read_bytes_per_sec: crate::config::units::ByteSize,
    /// ListShards period (new shards are also found at each SHARD_END).
    #[serde(default = "default_discovery")]
    pub shard_discovery_interval: Dur,
    #[serde(default)]
    pub format: RecordFormat,
    /// Bounded runs (tests, backfills): once every shard is caught up and no
    /// record arrived for this long, the source reports itself exhausted.
    pub stop_when_idle: Option<Dur>,
    /// Retries of Kinesis calls (network errors, 5xx). Throttling is retried
    /// without limit, with the same backoff.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
}

fn default_poll_limit() -> u32 {
    10_000
}
fn default_poll_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_read_bytes_per_sec() -> crate::config::units::ByteSize {
    crate::config::units::ByteSize(2 << 20)
}
fn default_fan_out_renew_after() -> Dur {
    Dur(Duration::from_secs(290))
}
fn default_fan_out_idle_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_discovery() -> Dur {
    Dur(Duration::from_secs(10))
}

impl KinesisSourceSpec {
    /// A spec with every default, for tests and programmatic use.
    pub fn new(stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            region: None,
            endpoint: None,
            start_position: StartPosition::default(),
            timestamp: None,
            mode: ReadMode::default(),
            consumer_name: None,
            fan_out_renew_after: default_fan_out_renew_after(),
            fan_out_idle_timeout: default_fan_out_idle_timeout(),
            kpl_hash_range_filter: false,
            poll_limit: default_poll_limit(),
            poll_interval: default_poll_interval(),
            read_bytes_per_sec: default_read_bytes_per_sec(),
            shard_discovery_interval: default_discovery(),
            format: RecordFormat::default(),
            stop_when_idle: None,
            retry: None,
        }
    }

    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.stream.trim().is_empty() {
            return Err("`stream` is empty: give a stream name or ARN".into());
        }
        if self.stream.starts_with("arn:") && self.stream_arn_parts().is_none() {
            return Err(format!("`stream` {:?} is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)", self.stream));
        }
        if let (Some(region), Some((arn_region, _))) = (&self.region, self.stream_arn_parts()) {
            if region != arn_region {
                return Err(format!(
                    "`region` = {region:?} disagrees with the region of the stream ARN ({arn_region:?}): \
                     drop `region` (the ARN's is used) or fix the ARN"
                ));
            }
        }
        if !(1..=10_000).contains(&self.poll_limit) {
            return Err(format!("`poll_limit` = {} is out of range (1..=10000, the GetRecords limit)", self.poll_limit));
        }
        match (self.start_position, &self.timestamp) {
            (StartPosition::AtTimestamp, None) => {
                return Err("`start_position = \"at_timestamp\"` needs `timestamp` (RFC 3339, e.g. \"2016-03-14T17:00:00Z\")".into())
            }
            (StartPosition::AtTimestamp, Some(_)) => {
                self.start_timestamp()?;
            }
            (_, Some(_)) => return Err("`timestamp` is only used with `start_position = \"at_timestamp\"`".into()),
            _ => {}
        }
        if self.shard_discovery_interval.0 < Duration::from_secs(1) {
            return Err("`shard_discovery_interval` must be at least 1s (ListShards allows 100 calls/s per account)".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.fan_out_renew_after.0) {
            return Err("`fan_out_renew_after` must be between 1s and 5m (a subscription lasts 5 minutes)".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.fan_out_idle_timeout.0) {
            return Err("`fan_out_idle_timeout` must be between 1s and 5m".into());
        }
        if let Some(name) = &self.consumer_name {
            let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(format!("`consumer_name` {name:?} must be 1-128 characters of [a-zA-Z0-9_.-]"));
            }
        }
        Ok(())
    }

    /// `at_timestamp` start, in milliseconds since the epoch.
    pub fn start_timestamp(&self) -> Result<Option<i64>, String> {
        let Some(ts) = &self.timestamp else { return Ok(None) };
        let t = humantime::parse_rfc3339_weak(ts)
            .map_err(|e| format!("`timestamp` {ts:?} is not an RFC 3339 time ({e}); write e.g. \"2016-03-14T17:00:00Z\""))?;
        let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| format!("`timestamp` {ts:?} is before 1970"))?.as_millis();
        Ok(Some(ms as i64))
    }

    /// (region, name) of an ARN `stream`.
    pub fn stream_arn_parts(&self) -> Option<(&str, &str)> {
        let rest = self.stream.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let (_partition, service, region, _account, resource) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let name = resource.strip_prefix("stream/")?;
        (service == "kinesis" && !region.is_empty() && !name.is_empty() && !name.contains('/')).then_some((region, name))
    }

    /// The region to use: explicit, else the ARN's, else the AWS chain's.
    pub fn effective_region(&self) -> Option<String> {
        self.region.clone().or_else(|| self.stream_arn_parts().map(|(r, _)| r.to_string()))
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.unwrap_or(RetryPolicy {
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_attempts: 12,
            max_elapsed: Some(Duration::from_secs(120)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<KinesisSourceSpec, String> {
        let spec: KinesisSourceSpec = toml::from_str(s).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(spec)
    }

    #[test]
    fn defaults_and_full() {
        let s = parse("stream = \"taxi\"").unwrap();
        assert_eq!((s.start_position, s.mode, s.poll_limit), (StartPosition::Latest, ReadMode::Polling, 10_000));
        let s = parse(
            "stream = \"arn:aws:kinesis:eu-west-1:123456789012:stream/taxi\"\nstart_position = \"at_timestamp\"\n\
             timestamp = \"2016-03-14T17:00:00Z\"\nmode = \"auto\"\nconsumer_name = \"c-1\"\npoll_limit = 500\n\
             poll_interval = \"200ms\"\nshard_discovery_interval = \"5s\"\nformat = \"json\"\nstop_when_idle = \"3s\"\n\
             retry = { max_attempts = 3 }",
        )
        .unwrap();
        assert_eq!(s.effective_region().as_deref(), Some("eu-west-1"));
        assert_eq!(s.stream_arn_parts(), Some(("eu-west-1", "taxi")));
        assert_eq!(s.start_timestamp().unwrap(), Some(1_457_974_800_000));
        assert_eq!(s.retry_policy().max_attempts, 3);
    }

    #[test]
    fn parses_as_a_pipeline_source() {
        let s: crate::config::SourceSpec =
            toml::from_str("type = \"kinesis\"\nstream = \"taxi\"\npoll_interval = \"250ms\"\nretry = { max_attempts = 2 }").unwrap();
        let crate::config::SourceSpec::Kinesis(k) = s else { panic!("not a kinesis source") };
        assert_eq!((k.stream.as_str(), k.poll_interval.0, k.retry_policy().max_attempts), ("taxi", Duration::from_millis(250), 2));
        assert!(toml::from_str::<crate::config::SourceSpec>("type = \"kinesis\"\nstream = \"t\"\nstrem = 1").is_err());
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(parse("stream = \"t\"\nstart_position = \"at_timestamp\"").unwrap_err().contains("needs `timestamp`"));
        assert!(parse("stream = \"t\"\ntimestamp = \"2016-03-14T17:00:00Z\"").unwrap_err().contains("only used"));
        assert!(parse("stream = \"t\"\nstart_position = \"at_timestamp\"\ntimestamp = \"yesterday\"").unwrap_err().contains("RFC 3339"));
        assert!(parse("stream = \"t\"\npoll_limit = 0").unwrap_err().contains("poll_limit"));
        assert!(parse("stream = \"arn:aws:s3:::bucket\"").unwrap_err().contains("not a Kinesis stream ARN"));
        assert!(parse("stream = \"t\"\nmode = \"push\"").is_err());
        assert!(parse("stream = \"t\"\nshards = 3").unwrap_err().contains("unknown field"));
        assert!(parse("stream = \"t\"\nconsumer_name = \"a b\"").unwrap_err().contains("consumer_name"));
        let arn = "stream = \"arn:aws:kinesis:eu-west-1:123456789012:stream/taxi\"";
        assert!(parse(&format!("{arn}\nregion = \"us-east-1\"")).unwrap_err().contains("disagrees with the region of the stream ARN"));
        assert_eq!(parse(&format!("{arn}\nregion = \"eu-west-1\"")).unwrap().effective_region().as_deref(), Some("eu-west-1"));
        assert!(parse("stream = \"t\"\nfan_out_idle_timeout = \"0s\"").unwrap_err().contains("fan_out_idle_timeout"));
        assert!(!parse("stream = \"t\"").unwrap().kpl_hash_range_filter, "the default never drops a record");
    }
}
