//! Checkpoints in S3: `s3://bucket/prefix` → `prefix/checkpoint.json`, plus a
//! lease object `prefix/LOCK` that keeps a second sluice process off the prefix.
//!
//! Why both: conditional writes on the checkpoint alone (`If-Match` the ETag we
//! last saw) stop a blind overwrite, but a second process that opened *after*
//! the first one's latest save would win its first write and make the *first*
//! (healthy) process fail. The lease makes the newcomer fail at open instead,
//! like the local store's lock file, and the conditional checkpoint write stays
//! as the second line of defence (e.g. a process paused past its lease).
//!
//! The lease is created with `If-None-Match: *`, renewed with `If-Match` before
//! every save and by a heartbeat task, and deleted (`If-Match`) on drop. A lease
//! is taken over only when its heartbeat is older than its TTL (the owner's and
//! our clocks must agree within the TTL), or when it names this host and a PID
//! that is no longer running (a restart after a crash does not wait the TTL).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::{Checkpoint, CheckpointError, CheckpointStore};
use crate::retry::RetryPolicy;

const CHECKPOINT: &str = "checkpoint.json";
const LOCK: &str = "LOCK";
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
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(format!("{url:?}: bucket name {bucket:?} is not valid (3-63 characters: a-z, 0-9, '-', '.'); write s3://bucket/prefix"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s.is_empty() && !prefix.is_empty()) {
            return Err(format!("{url:?}: the prefix has an empty path segment (`//`)"));
        }
        Ok(Self { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }

    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}/{name}", self.prefix) }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// A lease not renewed for this long may be taken over by another process.
    pub lease_ttl: Duration,
    /// Retries of transient errors (network, timeouts, 5xx, throttling).
    pub retry: RetryPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(60),
            retry: RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(5), 6, Some(Duration::from_secs(60))),
        }
    }
}

/// Builds a client from the AWS default chain. `SLUICE_S3_ENDPOINT` overrides
/// the endpoint (aws-config reads `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`
/// itself); any override turns on path-style addressing, which emulators need.
/// SDK retries are off: `Options::retry` is the one policy.
pub async fn client_from_env() -> aws_sdk_s3::Client {
    let endpoint = std::env::var("SLUICE_S3_ENDPOINT").ok().filter(|s| !s.is_empty());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
    if let Some(ep) = &endpoint {
        loader = loader.endpoint_url(ep);
    }
    let shared = loader.load().await;
    let overridden = endpoint.is_some()
        || ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    let mut conf = aws_sdk_s3::config::Builder::from(&shared).force_path_style(overridden);
    if shared.region().is_none() {
        conf = conf.region(Region::new(FALLBACK_REGION));
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

/// The lease document in `prefix/LOCK`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    owner: String,
    host: String,
    pid: u32,
    heartbeat_ms: i64,
    ttl_ms: u64,
}

/// State shared by the store and its heartbeat task.
struct Shared {
    client: aws_sdk_s3::Client,
    url: S3Url,
    opts: Options,
    owner: String,
    /// ETag of our lease object; `None` once the lease is lost or released.
    lease_etag: Mutex<Option<String>>,
    /// ETag of the checkpoint we last read or wrote; `None`: no object yet.
    cp_etag: Mutex<Option<String>>,
}

pub struct S3Store {
    shared: Arc<Shared>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// One failed S3 call, classified.
struct CallError {
    /// 412 / 409: a conditional write lost against another writer.
    conflict: bool,
    not_found: bool,
    retryable: bool,
    message: String,
}

fn classify<E>(err: &SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    let (code, status) = match err {
        SdkError::ServiceError(ctx) => (ctx.err().code().map(str::to_string), Some(ctx.raw().status().as_u16())),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return CallError { conflict: false, not_found: false, retryable: true, message };
        }
        _ => (None, None),
    };
    let code = code.as_deref().unwrap_or("");
    let conflict = matches!(code, "PreconditionFailed" | "ConditionalRequestConflict") || matches!(status, Some(412 | 409));
    let not_found = code == "NoSuchKey" || (status == Some(404) && code != "NoSuchBucket");
    let retryable = !conflict
        && (matches!(code, "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" | "Throttling")
            || matches!(status, Some(429 | 500..=599)) && status != Some(501));
    CallError { conflict, not_found, retryable, message }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Shared {
    fn io(&self, key: &str, message: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Io { store: format!("s3://{}/{key}", self.url.bucket), message: message.to_string() }
    }

    fn locked(&self, message: impl Into<String>) -> CheckpointError {
        CheckpointError::Locked { store: self.url.to_string(), message: message.into() }
    }

    /// A failed call that is not a conflict, as the error the pipeline shows.
    fn failure(&self, key: &str, op: &str, e: CallError) -> CheckpointError {
        let hint = if e.message.contains("NoSuchBucket") {
            format!("bucket {} does not exist; create it or fix `[checkpoint] dir`", self.url.bucket)
        } else if e.message.contains("AccessDenied") || e.message.contains("InvalidAccessKeyId") || e.message.contains("SignatureDoesNotMatch") {
            "check the AWS credentials and that they may read and write this prefix".into()
        } else if e.retryable {
            "S3 (or SLUICE_S3_ENDPOINT) is not reachable or failing; check the endpoint and network".into()
        } else {
            "check the bucket, prefix and credentials".into()
        };
        self.io(key, format!("{op} failed: {}; {hint}", e.message))
    }

    /// GET an object: its bytes and ETag, `None` when absent. Retries transient errors.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Option<String>)>, CheckpointError> {
        let r = self
            .opts
            .retry
            .retry(
                |attempt| async move {
                    debug!(bucket = %self.url.bucket, key, attempt, "GetObject");
                    let out = match self.client.get_object().bucket(&self.url.bucket).key(key).send().await {
                        Ok(out) => out,
                        Err(e) => {
                            let c = classify(&e);
                            return if c.not_found { Ok(None) } else { Err(c) };
                        }
                    };
                    let etag = out.e_tag().map(str::to_string);
                    match out.body.collect().await {
                        Ok(b) => Ok(Some((b.into_bytes().to_vec(), etag))),
                        Err(e) => Err(CallError { conflict: false, not_found: false, retryable: true, message: e.to_string() }),
                    }
                },
                |e: &CallError| e.retryable,
            )
            .await;
        r.map_err(|e| self.failure(key, "GetObject", e))
    }

    /// Conditional PUT: `If-Match: etag`, or `If-None-Match: *` when `etag` is
    /// `None`. Returns the new ETag, or `Ok(Err(()))` when the condition failed
    /// because someone else wrote. A retried attempt that meets a conflict
    /// checks whether the object now holds exactly our bytes: then an earlier
    /// attempt succeeded and only its answer was lost.
    async fn put_if(&self, key: &str, body: &[u8], etag: Option<&str>) -> Result<Result<String, ()>, CheckpointError> {
        let r = self
            .opts
            .retry
            .retry(
                |attempt| async move {
                    let req = self.client.put_object().bucket(&self.url.bucket).key(key).body(ByteStream::from(body.to_vec()));
                    let req = match etag {
                        Some(t) => req.if_match(t),
                        None => req.if_none_match("*"),
                    };
                    match req.send().await {
                        Ok(out) => Ok(Ok(out.e_tag().unwrap_or_default().to_string())),
                        Err(e) => {
                            let c = classify(&e);
                            // If-Match on a deleted object answers 404 NoSuchKey: also "someone else".
                            if !(c.conflict || (etag.is_some() && c.not_found)) {
                                return Err(c);
                            }
                            if attempt > 1 {
                                if let Ok(Some((now, Some(t)))) = self.get(key).await {
                                    if now == body {
                                        return Ok(Ok(t));
                                    }
                                }
                            }
                            Ok(Err(()))
                        }
                    }
                },
                |e: &CallError| e.retryable,
            )
            .await;
        r.map_err(|e| self.failure(key, "PutObject", e))
    }

    fn lease_body(&self) -> Vec<u8> {
        let lease = Lease {
            owner: self.owner.clone(),
            host: hostname(),
            pid: std::process::id(),
            heartbeat_ms: now_ms(),
            ttl_ms: self.opts.lease_ttl.as_millis() as u64,
        };
        serde_json::to_vec(&lease).expect("lease serialises")
    }

    /// Takes the lease at open: create it, or take over an expired or orphaned one.
    async fn acquire(&self) -> Result<(), CheckpointError> {
        let key = self.url.key(LOCK);
        for _ in 0..3 {
            if let Ok(t) = self.put_if(&key, &self.lease_body(), None).await? {
                *self.lease_etag.lock().await = Some(t);
                return Ok(());
            }
            let Some((bytes, Some(etag))) = self.get(&key).await? else { continue }; // released meanwhile
            let held = match serde_json::from_slice::<Lease>(&bytes) {
                Ok(l) => l,
                Err(e) => {
                    return Err(self.locked(format!(
                        "s3://{}/{key} exists but is not a sluice lease ({e}); delete it if nothing else uses this prefix",
                        self.url.bucket
                    )))
                }
            };
            let age = Duration::from_millis(now_ms().saturating_sub(held.heartbeat_ms).max(0) as u64);
            let orphaned = held.host == hostname() && held.pid != std::process::id() && !pid_alive(held.pid);
            let expired = age > Duration::from_millis(held.ttl_ms);
            if !(orphaned || expired) {
                let left = Duration::from_millis(held.ttl_ms).saturating_sub(age);
                return Err(self.locked(format!(
                    "lease {} held by host {}, pid {}, last heartbeat {}s ago; if that process is gone, the lease expires in {}s",
                    self.url.key(LOCK),
                    held.host,
                    held.pid,
                    age.as_secs(),
                    left.as_secs() + 1
                )));
            }
            let why = if orphaned { "its process is gone" } else { "its heartbeat expired" };
            warn!(store = %self.url, host = %held.host, pid = held.pid, "taking over the checkpoint lease: {why}");
            if let Ok(t) = self.put_if(&key, &self.lease_body(), Some(&etag)).await? {
                *self.lease_etag.lock().await = Some(t);
                return Ok(());
            }
            // Someone else took it over first: look again.
        }
        Err(self.locked(format!("the lease s3://{}/{key} keeps changing: another sluice process is starting on this prefix", self.url.bucket)))
    }

    /// Renews the lease; `Locked` when it was taken over (or released).
    async fn renew(&self) -> Result<(), CheckpointError> {
        let key = self.url.key(LOCK);
        let mut guard = self.lease_etag.lock().await;
        let Some(etag) = guard.clone() else {
            return Err(self.locked(format!("this process lost its lease s3://{}/{key} to another one", self.url.bucket)));
        };
        match self.put_if(&key, &self.lease_body(), Some(&etag)).await? {
            Ok(t) => {
                *guard = Some(t);
                Ok(())
            }
            Err(()) => {
                *guard = None;
                Err(self.locked(format!(
                    "it took over the lease s3://{}/{key} while this one was paused or cut off for more than {}s",
                    self.url.bucket,
                    self.opts.lease_ttl.as_secs()
                )))
            }
        }
    }

    async fn release(&self) {
        let key = self.url.key(LOCK);
        let Some(etag) = self.lease_etag.lock().await.take() else { return };
        let del = self.client.delete_object().bucket(&self.url.bucket).key(&key).if_match(etag).send();
        match tokio::time::timeout(Duration::from_secs(5), del).await {
            Ok(Ok(_)) => debug!(store = %self.url, "checkpoint lease released"),
            Ok(Err(e)) => warn!(store = %self.url, error = %DisplayErrorContext(&e), "could not release the checkpoint lease; it expires by itself"),
            Err(_) => warn!(store = %self.url, "releasing the checkpoint lease timed out; it expires by itself"),
        }
    }
}

/// Renews the lease every third of its TTL while the store lives.
async fn heartbeat(shared: Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = s.renew().await {
            match e {
                CheckpointError::Locked { .. } => {
                    warn!(error = %e, "checkpoint lease lost; the next checkpoint will fail");
                    return;
                }
                _ => warn!(error = %e, "checkpoint lease heartbeat failed; retrying"),
            }
        }
    }
}

impl S3Store {
    /// Opens `s3://bucket/prefix` with a client from the AWS default chain.
    pub async fn open(url: &str) -> Result<Self, CheckpointError> {
        let parsed = S3Url::parse(url).map_err(|message| CheckpointError::Io { store: url.into(), message })?;
        Self::open_with(client_from_env().await, parsed, Options::default()).await
    }

    /// Opens with a given client: takes the lease (or fails with `Locked`) and
    /// reads the current checkpoint's ETag.
    pub async fn open_with(client: aws_sdk_s3::Client, url: S3Url, opts: Options) -> Result<Self, CheckpointError> {
        let owner = format!("{:032x}", rand::random::<u128>());
        let every = (opts.lease_ttl / 3).max(Duration::from_millis(100));
        let shared = Arc::new(Shared {
            client,
            url,
            opts,
            owner,
            lease_etag: Mutex::new(None),
            cp_etag: Mutex::new(None),
        });
        shared.acquire().await?;
        let store = Self { heartbeat: tokio::spawn(heartbeat(Arc::downgrade(&shared), every)), shared };
        // From here on, dropping `store` releases the lease.
        let key = store.shared.url.key(CHECKPOINT);
        *store.shared.cp_etag.lock().await = store.shared.get(&key).await?.and_then(|(_, t)| t);
        info!(store = %store.shared.url, "checkpoint lease taken");
        Ok(store)
    }

    pub fn url(&self) -> &S3Url {
        &self.shared.url
    }
}

#[async_trait]
impl CheckpointStore for S3Store {
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let s = &self.shared;
        let key = s.url.key(CHECKPOINT);
        let mut cp_etag = s.cp_etag.lock().await;
        let Some((bytes, etag)) = s.get(&key).await? else {
            *cp_etag = None;
            return Ok(None);
        };
        *cp_etag = etag;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| CheckpointError::Corrupt {
            store: format!("s3://{}/{key}", s.url.bucket),
            message: e.to_string(),
        })
    }

    async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let s = &self.shared;
        s.renew().await?;
        let key = s.url.key(CHECKPOINT);
        let body = serde_json::to_vec_pretty(cp).expect("checkpoint serialises");
        let mut cp_etag = s.cp_etag.lock().await;
        match s.put_if(&key, &body, cp_etag.as_deref()).await? {
            Ok(t) => {
                *cp_etag = Some(t);
                Ok(())
            }
            Err(()) => Err(s.locked(format!(
                "s3://{}/{key} was written by another process since this one read it; nothing was overwritten",
                s.url.bucket
            ))),
        }
    }

    fn describe(&self) -> String {
        self.shared.url.to_string()
    }
}

impl Drop for S3Store {
    /// Releases the lease so a restart does not wait for it to expire. Blocks
    /// (a few seconds at most) on a multi-threaded runtime, where a spawned
    /// task might never run before the process exits; elsewhere best effort.
    fn drop(&mut self) {
        self.heartbeat.abort();
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let shared = self.shared.clone();
        match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(shared.release()));
            }
            _ => {
                handle.spawn(async move { shared.release().await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = S3Url::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(u, S3Url { bucket: "my-bucket".into(), prefix: "a/b".into() });
        assert_eq!(u.key(CHECKPOINT), "a/b/checkpoint.json");
        assert_eq!(u.to_string(), "s3://my-bucket/a/b");
        let root = S3Url::parse("s3://bkt").unwrap();
        assert_eq!((root.prefix.as_str(), root.key(LOCK)), ("", "LOCK".to_string()));
        assert_eq!(S3Url::parse("s3://bkt/").unwrap().key(CHECKPOINT), "checkpoint.json");
        for bad in ["s3://", "s3://Upper/x", "s3://ab/x", "file:///tmp", "s3://b_k/x", "s3://bkt/a//b"] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }
}
