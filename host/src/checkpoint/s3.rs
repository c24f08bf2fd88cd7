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
//! our clocks must agree within the TTL), or when it names this host, boot and
//! PID namespace and a PID that is no longer running (a restart after a crash
//! does not wait the TTL; hostname + PID alone is no identity: containers share
//! hostnames and number PIDs from 1).
//!
//! Fencing. A process paused past its TTL (SIGSTOP, a long GC-like stall, a
//! network partition) must not make output visible once another took over:
//! - the new owner *claims* the checkpoint object at `load` (a conditional
//!   rewrite with its owner token, before any sink cleanup), so a checkpoint
//!   PUT of the old owner that was in flight can no longer land after the new
//!   owner read the checkpoint;
//! - sink backends call [`ensure_lease`] before every commit: a lease not
//!   confirmed within 3/4 of its TTL is renewed first, and a lost one refuses;
//! - losing the lease stops the pipeline (`CheckpointStore::lost`) with a
//!   clear error instead of a warning.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::{Checkpoint, CheckpointError, CheckpointStore};
use crate::retry::RetryPolicy;
pub use crate::s3::{client_from_env, S3Url};
use crate::s3::{classify, CallError};

const CHECKPOINT: &str = "checkpoint.json";
const LOCK: &str = "LOCK";
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

/// The lease document in `prefix/LOCK`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    owner: String,
    host: String,
    pid: u32,
    heartbeat_ms: i64,
    ttl_ms: u64,
    /// The kernel's boot id and the PID namespace: a PID means something only
    /// within both (absent in leases of earlier versions: never orphaned then).
    #[serde(default)]
    boot_id: String,
    #[serde(default)]
    pid_ns: String,
}

/// The store whose lease this process holds, for [`ensure_lease`].
static ACTIVE: std::sync::Mutex<Option<Weak<Shared>>> = std::sync::Mutex::new(None);

/// Whether this process may still make output visible: `Ok` without an S3
/// checkpoint store; with one, `Ok` when its lease was confirmed within 3/4
/// of its TTL or can be renewed now, else why not.
pub async fn ensure_lease() -> Result<(), String> {
    let Some(s) = ACTIVE.lock().expect("lease registry").as_ref().and_then(Weak::upgrade) else { return Ok(()) };
    if let Some(why) = s.lost.borrow().clone() {
        return Err(why);
    }
    let fresh = s.confirmed.lock().expect("lease time").is_some_and(|t| t.elapsed() < s.opts.lease_ttl * 3 / 4);
    if fresh {
        return Ok(());
    }
    s.renew().await.map_err(|e| e.to_string())
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
    /// When the body of our last successful lease write was made: the lease
    /// is ours until then + TTL (by our clock).
    confirmed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Why the lease is lost, once it is.
    lost: tokio::sync::watch::Sender<Option<String>>,
}

pub struct S3Store {
    shared: Arc<Shared>,
    heartbeat: tokio::task::JoinHandle<()>,
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

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn pid_ns() -> String {
    std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default()
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
        let hint = e.hint(&self.url, "[checkpoint] dir");
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
                        Err(e) => Err(CallError::transient(e.to_string())),
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
            boot_id: boot_id(),
            pid_ns: pid_ns(),
        };
        serde_json::to_vec(&lease).expect("lease serialises")
    }

    /// Takes the lease at open: create it, or take over an expired or orphaned one.
    async fn acquire(&self) -> Result<(), CheckpointError> {
        let key = self.url.key(LOCK);
        for _ in 0..3 {
            let at = std::time::Instant::now();
            if let Ok(t) = self.put_if(&key, &self.lease_body(), None).await? {
                *self.lease_etag.lock().await = Some(t);
                *self.confirmed.lock().expect("lease time") = Some(at);
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
            let same_pid_space = held.host == hostname() && !held.boot_id.is_empty() && held.boot_id == boot_id() && held.pid_ns == pid_ns();
            let orphaned = same_pid_space && held.pid != std::process::id() && !pid_alive(held.pid);
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
            let at = std::time::Instant::now();
            if let Ok(t) = self.put_if(&key, &self.lease_body(), Some(&etag)).await? {
                *self.lease_etag.lock().await = Some(t);
                *self.confirmed.lock().expect("lease time") = Some(at);
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
            let why = self.lost.borrow().clone();
            return Err(self.locked(why.unwrap_or_else(|| format!("this process lost its lease s3://{}/{key} to another one", self.url.bucket))));
        };
        let at = std::time::Instant::now();
        match self.put_if(&key, &self.lease_body(), Some(&etag)).await? {
            Ok(t) => {
                *guard = Some(t);
                *self.confirmed.lock().expect("lease time") = Some(at);
                Ok(())
            }
            Err(()) => {
                *guard = None;
                let why = format!(
                    "another process took over the lease s3://{}/{key} while this one was paused or cut off for more than {}s; this one stops without making more output visible",
                    self.url.bucket,
                    self.opts.lease_ttl.as_secs()
                );
                self.lose(why.clone());
                Err(self.locked(why))
            }
        }
    }

    /// Records that the lease is lost; wakes `CheckpointStore::lost`.
    fn lose(&self, why: String) {
        self.lost.send_if_modified(|l| {
            let first = l.is_none();
            if first {
                *l = Some(why);
            }
            first
        });
    }

    async fn release(&self) {
        // From now on nothing may be committed under this lease.
        self.lose("this process released its checkpoint lease".into());
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
                    warn!(error = %e, "checkpoint lease lost; the pipeline stops");
                    return;
                }
                _ => {
                    // Past the TTL another process may take the lease over at any moment.
                    let since = s.confirmed.lock().expect("lease time").map(|t| t.elapsed()).unwrap_or_default();
                    if since >= s.opts.lease_ttl {
                        s.lose(format!("could not renew the checkpoint lease for {}s ({e}); another process may own the store now", since.as_secs()));
                        return;
                    }
                    warn!(error = %e, "checkpoint lease heartbeat failed; retrying");
                }
            }
        }
    }
}

impl S3Store {
    /// Opens `s3://bucket/prefix` with a client from the AWS default chain.
    pub async fn open(url: &str, lease_ttl: Option<Duration>) -> Result<Self, CheckpointError> {
        let parsed = S3Url::parse(url).map_err(|message| CheckpointError::Io { store: url.into(), message })?;
        let mut opts = Options::default();
        opts.lease_ttl = lease_ttl.unwrap_or(opts.lease_ttl);
        Self::open_with(client_from_env().await, parsed, opts).await
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
            confirmed: std::sync::Mutex::new(None),
            lost: tokio::sync::watch::Sender::new(None),
        });
        shared.acquire().await?;
        *ACTIVE.lock().expect("lease registry") = Some(Arc::downgrade(&shared));
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
    /// Reads the checkpoint and claims it: rewrites it (conditionally, with
    /// this owner's token) so a checkpoint PUT still in flight from a former
    /// owner fails instead of landing after this read. Without a checkpoint
    /// the claim is a document with no epoch, which loads as none.
    async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let s = &self.shared;
        let key = s.url.key(CHECKPOINT);
        let corrupt = |e: serde_json::Error| CheckpointError::Corrupt { store: format!("s3://{}/{key}", s.url.bucket), message: e.to_string() };
        let mut cp_etag = s.cp_etag.lock().await;
        for _ in 0..5 {
            let (doc, etag) = match s.get(&key).await? {
                None => (serde_json::json!({ "claimed_by": s.owner }), None),
                Some((bytes, etag)) => {
                    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(corrupt)?;
                    if let Some(o) = doc.as_object_mut() {
                        o.insert("claimed_by".into(), s.owner.clone().into());
                    }
                    (doc, etag)
                }
            };
            let body = serde_json::to_vec_pretty(&doc).expect("checkpoint serialises");
            match s.put_if(&key, &body, etag.as_deref()).await? {
                Ok(t) => {
                    *cp_etag = Some(t);
                    if doc.get("epoch").is_none() {
                        return Ok(None);
                    }
                    return serde_json::from_value(doc).map(Some).map_err(corrupt);
                }
                // Written meanwhile (a former owner's last save): read it again.
                Err(()) => continue,
            }
        }
        Err(s.locked(format!("s3://{}/{key} keeps changing while this process claims it", s.url.bucket)))
    }

    async fn lost(&self) -> CheckpointError {
        let mut rx = self.shared.lost.subscribe();
        let got = rx.wait_for(Option::is_some).await.map(|w| w.clone().unwrap_or_default());
        let Ok(why) = got else { return std::future::pending().await };
        self.shared.locked(why)
    }

    async fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let s = &self.shared;
        s.renew().await?;
        let key = s.url.key(CHECKPOINT);
        let mut doc = serde_json::to_value(cp).expect("checkpoint serialises");
        doc.as_object_mut().expect("an object").insert("claimed_by".into(), s.owner.clone().into());
        let body = serde_json::to_vec_pretty(&doc).expect("checkpoint serialises");
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
