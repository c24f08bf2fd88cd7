//! The S3 backend: a staged object is a multipart upload, committed by
//! CompleteMultipartUpload and discarded by AbortMultipartUpload.
//!
//! Bytes are uploaded as parts of at least `PART_BYTES` while the file is
//! written, so memory holds one part per open file, never a whole file; the
//! last part may be smaller (S3 allows that). The checkpoint records the
//! upload id, each part's ETag, the multipart ETag the completed object will
//! have, and a random nonce stored in the object's metadata at creation.
//!
//! Commit is idempotent and judged by identity, not by "an object exists":
//! an object at the key whose ETag is the expected multipart ETag (or, with
//! SSE-KMS, where ETags are not MD5 based, whose nonce is ours) is this
//! upload, committed before; any other object is an error and is never
//! overwritten. Every commit first checks that this process still holds the
//! checkpoint store's lease (`checkpoint::s3::ensure_lease`), so a paused
//! instance that lost it makes nothing visible.
//!
//! Chunks (pieces of a file that spans checkpoints) must be readable once
//! finished, so they are completed objects under the hidden
//! `.sluice/chunks/` prefix of the table (one PUT when small), read back
//! with ranged GETs and deleted on discard.
//!
//! Retries (backoff with jitter, `crate::retry`) wrap one idempotent call:
//! one part upload (same number, same bytes), one completion, one abort, one
//! listing. A `write` is never repeated as a whole.

use std::collections::BTreeSet;
use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{Backend, BackendError, Pending, Staged, MARKERS};
use crate::retry::RetryPolicy;
use crate::s3::{classify, CallError, ClientOptions, ObjectOptions, S3Url};

/// Smallest part S3 accepts (except the last): 5 MiB. Parts are uploaded
/// once this much is buffered.
pub const PART_BYTES: usize = 8 << 20;
/// Where chunks live, relative to the table: hidden from readers (a chunk
/// must be readable, so it is a completed object, not an open upload).
const CHUNKS: &str = ".sluice/chunks";
/// Metadata key holding the upload's nonce (`x-amz-meta-sluice-upload`).
const NONCE_META: &str = "sluice-upload";

/// What a staged object's `Pending.staging` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Upload {
    upload_id: String,
    /// Part ETags in part-number order (part n is `parts[n - 1]`).
    parts: Vec<String>,
    /// The ETag the completed object has (`None` when parts are not MD5 based).
    etag: Option<String>,
    nonce: String,
}

pub struct S3Backend {
    url: S3Url,
    client_opts: ClientOptions,
    /// Built on first use: building a sink is synchronous, the client is not.
    client: OnceCell<aws_sdk_s3::Client>,
    objects: ObjectOptions,
    retry: RetryPolicy,
    /// The pipeline key the location came from, for hints (`sinks.lake.path`).
    key_name: String,
    content_type: &'static str,
}

impl S3Backend {
    pub fn new(
        url: S3Url,
        client_opts: ClientOptions,
        objects: ObjectOptions,
        key_name: &str,
    ) -> Self {
        S3Backend {
            url,
            client_opts,
            client: OnceCell::new(),
            objects,
            retry: RetryPolicy::new(
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(5),
                10,
                Some(std::time::Duration::from_secs(90)),
            ),
            key_name: key_name.to_owned(),
            content_type: "application/vnd.apache.parquet",
        }
    }

    /// Objects of another type than Parquet (the DLQ's NDJSON).
    pub fn with_content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }

    /// With a given client (tests, benchmarks).
    pub fn with_client(url: S3Url, client: aws_sdk_s3::Client, objects: ObjectOptions) -> Self {
        let b = Self::new(url, ClientOptions::default(), objects, "path");
        b.client.set(client).ok();
        b
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| crate::s3::client(&self.client_opts))
            .await
    }

    fn full_key(&self, key: &str) -> String {
        self.url.key(key)
    }

    /// The hidden object a chunk of table-relative `key` is kept in.
    fn chunk_key(&self, key: &str) -> String {
        self.url.key(&format!("{CHUNKS}/{key}"))
    }

    /// The table-relative key of an object or upload key: staged files and
    /// chunks by their own key, `None` for anything else sluice keeps.
    fn relative(&self, full: &str) -> Option<String> {
        let rel = if self.url.prefix.is_empty() { full } else { full.strip_prefix(&self.url.prefix)?.strip_prefix('/')? };
        match rel.strip_prefix(CHUNKS).and_then(|r| r.strip_prefix('/')) {
            Some(chunk) => Some(chunk.to_owned()),
            None => (!rel.starts_with(".sluice/")).then(|| rel.to_owned()),
        }
    }

    async fn staged_object(&self, key: &str, full_key: String, chunk: bool) -> Result<Box<dyn Staged>, BackendError> {
        let client = self.client().await;
        Ok(Box::new(S3Staged {
            backend: S3BackendRef {
                client: client.clone(),
                url: self.url.clone(),
                retry: self.retry,
                key_name: self.key_name.clone(),
                objects: self.objects.clone(),
                content_type: self.content_type,
            },
            key: key.to_owned(),
            full_key,
            upload_id: None,
            nonce: format!("{:032x}", rand::random::<u128>()),
            buf: Vec::new(),
            parts: Vec::new(),
            bytes: 0,
            chunk,
        }))
    }

    /// Every finished chunk object: full keys.
    async fn chunk_objects(&self) -> Result<Vec<String>, BackendError> {
        let client = self.client().await;
        let prefix = self.url.key(&format!("{CHUNKS}/"));
        let mut token: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let page = self
                .call("ListObjectsV2", &prefix, |_| {
                    let req = client.list_objects_v2().bucket(&self.url.bucket).prefix(&prefix).set_continuation_token(token.clone());
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
            out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            token = page.next_continuation_token().map(str::to_owned);
            if page.is_truncated() != Some(true) || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// A permanent failure, with what to do about it.
    fn fail(&self, op: &str, key: &str, e: CallError) -> BackendError {
        let hint = e.hint(&self.url, &self.key_name);
        BackendError {
            message: format!(
                "s3://{}/{key}: {op} failed: {}; {hint}",
                self.url.bucket, e.message
            ),
            retryable: false,
        }
    }

    /// Runs one idempotent call with retries.
    async fn call<T, F, Fut>(&self, op: &str, key: &str, f: F) -> Result<T, BackendError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        self.retry
            .retry(f, |e: &CallError| e.retryable)
            .await
            .map_err(|e| self.fail(op, key, e))
    }

    /// Every incomplete upload under the table: (full key, upload id).
    async fn uploads(&self) -> Result<Vec<(String, String)>, BackendError> {
        let client = self.client().await;
        let prefix = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut out = Vec::new();
        loop {
            let page = self
                .call("ListMultipartUploads", &prefix, |_| {
                    let req = client
                        .list_multipart_uploads()
                        .bucket(&self.url.bucket)
                        .prefix(&prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone());
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push((k.to_owned(), id.to_owned()));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// The object at `key`: ETag and our nonce, `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<(String, Option<String>)>, BackendError> {
        let client = self.client().await;
        self.call("HeadObject", key, |_| async move {
            match client
                .head_object()
                .bucket(&self.url.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => Ok(Some((
                    o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    o.metadata().and_then(|m| m.get(NONCE_META)).cloned(),
                ))),
                Err(e) => {
                    let c = classify(&e);
                    // HEAD answers a bare 404 without a code.
                    if c.not_found || c.code == "NotFound" {
                        Ok(None)
                    } else {
                        Err(c)
                    }
                }
            }
        })
        .await
    }

    /// Whether the visible object `(etag, nonce)` is the completed `u`.
    fn is_ours(u: &Upload, etag: &str, nonce: Option<&str>) -> bool {
        u.etag.as_deref() == Some(etag) || nonce == Some(u.nonce.as_str())
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), BackendError> {
        let client = self.client().await;
        self.call("AbortMultipartUpload", key, |_| async move {
            match client
                .abort_multipart_upload()
                .bucket(&self.url.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let c = classify(&e);
                    if c.code == "NoSuchUpload" || c.not_found {
                        Ok(())
                    } else {
                        Err(c)
                    }
                }
            }
        })
        .await
    }
}

/// The multipart ETag S3 gives the completed object: MD5 of the parts' MD5s
/// and the part count. `None` when a part's ETag is not an MD5 (SSE-KMS).
fn multipart_etag(parts: &[String]) -> Option<String> {
    let mut h = Md5::new();
    for p in parts {
        let raw = hex::decode(p.trim_matches('"'))
            .ok()
            .filter(|b| b.len() == 16)?;
        h.update(&raw);
    }
    Some(format!("{}-{}", hex::encode(h.finalize()), parts.len()))
}

struct S3Staged {
    backend: S3BackendRef,
    key: String,
    full_key: String,
    /// Started with the first part: a small file (most of them, with many
    /// partitions) costs no round trip until `finish`, where all files of a
    /// checkpoint start and upload concurrently.
    upload_id: Option<String>,
    nonce: String,
    buf: Vec<u8>,
    parts: Vec<String>,
    bytes: u64,
    /// A chunk: `finish` makes it a readable (hidden) object.
    chunk: bool,
}

/// A finished chunk's `Pending.staging`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chunk {
    object: String,
}

/// What a staged upload needs of its backend (cheap to clone).
#[derive(Clone)]
struct S3BackendRef {
    client: aws_sdk_s3::Client,
    url: S3Url,
    retry: RetryPolicy,
    key_name: String,
    objects: ObjectOptions,
    content_type: &'static str,
}

impl S3BackendRef {
    fn fail(&self, op: &str, key: &str, e: CallError) -> BackendError {
        let hint = e.hint(&self.url, &self.key_name);
        BackendError {
            message: format!(
                "s3://{}/{key}: {op} failed: {}; {hint}",
                self.url.bucket, e.message
            ),
            retryable: false,
        }
    }
}

impl S3Staged {
    /// A chunk is durable and readable once `finish` returns: one PUT when it
    /// fits in a part (idempotent), else its upload completed right away.
    async fn finish_chunk(mut self: Box<Self>, rows: u64) -> Result<Pending, BackendError> {
        let b = self.backend.clone();
        let full_key = self.full_key.clone();
        if self.parts.is_empty() {
            let body = Bytes::from(std::mem::take(&mut self.buf));
            let o = &b.objects;
            b.retry
                .retry(
                    |_| {
                        let req = b
                            .client
                            .put_object()
                            .bucket(&b.url.bucket)
                            .key(&full_key)
                            .body(ByteStream::from(body.clone()))
                            .set_server_side_encryption(o.sse())
                            .set_ssekms_key_id(o.kms_key_id.clone());
                        async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
                    },
                    |e: &CallError| e.retryable,
                )
                .await
                .map_err(|e| b.fail("PutObject", &full_key, e))?;
        } else {
            if !self.buf.is_empty() {
                self.upload_part().await?;
            }
            let id = self.upload_id.clone().expect("started by the first part");
            let parts: Vec<CompletedPart> = self
                .parts
                .iter()
                .enumerate()
                .map(|(i, e)| CompletedPart::builder().part_number(i as i32 + 1).e_tag(e).build())
                .collect();
            b.retry
                .retry(
                    |_| {
                        let req = b
                            .client
                            .complete_multipart_upload()
                            .bucket(&b.url.bucket)
                            .key(&full_key)
                            .upload_id(&id)
                            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts.clone())).build());
                        async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
                    },
                    |e: &CallError| e.retryable,
                )
                .await
                .map_err(|e| b.fail("CompleteMultipartUpload", &full_key, e))?;
        }
        Ok(Pending {
            key: self.key.clone(),
            rows,
            bytes: self.bytes,
            staging: serde_json::to_value(Chunk { object: full_key }).expect("chunk serializes"),
        })
    }

    /// Starts the multipart upload. Not idempotent (a lost answer leaves an
    /// extra upload), but that upload is of this generation and recovery
    /// aborts it.
    async fn start(&mut self) -> Result<String, BackendError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let b = &self.backend;
        let (o, full_key, nonce) = (&b.objects, &self.full_key, &self.nonce);
        let id = b
            .retry
            .retry(
                |_| {
                    let req = b
                        .client
                        .create_multipart_upload()
                        .bucket(&b.url.bucket)
                        .key(full_key)
                        .content_type(b.content_type)
                        .metadata(NONCE_META, nonce)
                        .set_server_side_encryption(o.sse())
                        .set_ssekms_key_id(o.kms_key_id.clone())
                        .set_storage_class(o.storage_class.as_deref().map(StorageClass::from))
                        .set_tagging(o.tagging());
                    async move {
                        let out = req.send().await.map_err(|e| classify(&e))?;
                        out.upload_id()
                            .map(str::to_owned)
                            .ok_or_else(|| CallError::transient("no upload id in the answer"))
                    }
                },
                |e: &CallError| e.retryable,
            )
            .await
            .map_err(|e| b.fail("CreateMultipartUpload", full_key, e))?;
        tracing::debug!(key = %full_key, upload_id = %id, "multipart upload started");
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Uploads `buf` as the next part. One idempotent step: a retry sends
    /// the same bytes under the same part number, which replaces the part.
    async fn upload_part(&mut self) -> Result<(), BackendError> {
        let upload_id = self.start().await?;
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let n = self.parts.len() as i32 + 1;
        let md5 = Md5::digest(&body);
        let content_md5 = aws_smithy_types::base64::encode(md5.as_slice());
        let b = &self.backend;
        let (full_key, upload_id) = (&self.full_key, &upload_id);
        let etag = b
            .retry
            .retry(
                |attempt| {
                    let req = b
                        .client
                        .upload_part()
                        .bucket(&b.url.bucket)
                        .key(full_key)
                        .upload_id(upload_id)
                        .part_number(n)
                        .content_md5(&content_md5)
                        .body(ByteStream::from(body.clone()));
                    async move {
                        if attempt > 1 {
                            tracing::debug!(key = %full_key, part = n, attempt, "retrying UploadPart");
                        }
                        let out = req.send().await.map_err(|e| classify(&e))?;
                        Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
                    }
                },
                |e: &CallError| e.retryable,
            )
            .await
            .map_err(|e| b.fail(&format!("UploadPart {n}"), full_key, e))?;
        self.parts.push(etag);
        Ok(())
    }
}

#[async_trait]
impl Staged for S3Staged {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.buf.extend_from_slice(bytes);
        self.bytes += bytes.len() as u64;
        if self.buf.len() >= PART_BYTES {
            self.upload_part().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, rows: u64) -> Result<Pending, BackendError> {
        if self.chunk {
            return self.finish_chunk(rows).await;
        }
        if !self.buf.is_empty() || self.parts.is_empty() {
            self.upload_part().await?;
        }
        let upload = Upload {
            upload_id: self.upload_id.clone().expect("started by the first part"),
            etag: multipart_etag(&self.parts),
            parts: std::mem::take(&mut self.parts),
            nonce: self.nonce.clone(),
        };
        Ok(Pending {
            key: self.key.clone(),
            rows,
            bytes: self.bytes,
            staging: serde_json::to_value(upload).expect("upload serializes"),
        })
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        self.url.to_string()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        self.staged_object(key, self.full_key(key), false).await
    }

    async fn create_chunk(&self, key: &str) -> Result<Box<dyn Staged>, BackendError> {
        self.staged_object(key, self.chunk_key(key), true).await
    }

    async fn read(&self, p: &Pending, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        let c: Chunk = serde_json::from_value(p.staging.clone()).map_err(|e| BackendError {
            message: format!("the record of chunk {} is not an S3 chunk ({e})", p.key),
            retryable: false,
        })?;
        let client = self.client().await;
        let (key, want) = (&c.object, (range.end - range.start) as usize);
        let bytes = self
            .call("GetObject", key, |_| {
                let req = client
                    .get_object()
                    .bucket(&self.url.bucket)
                    .key(key)
                    .range(format!("bytes={}-{}", range.start, range.end.saturating_sub(1)));
                async move {
                    let out = req.send().await.map_err(|e| classify(&e))?;
                    let body = out.body.collect().await.map_err(|e| CallError::transient(e.to_string()))?;
                    Ok(body.into_bytes().to_vec())
                }
            })
            .await?;
        if bytes.len() != want {
            return Err(BackendError {
                message: format!(
                    "chunk s3://{}/{key} is short: bytes {}..{} gave {} bytes",
                    self.url.bucket,
                    range.start,
                    range.end,
                    bytes.len()
                ),
                retryable: false,
            });
        }
        Ok(bytes)
    }

    async fn commit(&self, p: &Pending) -> Result<(), BackendError> {
        if p.staging.get("object").is_some() {
            return Err(BackendError { message: format!("{} is a chunk: chunks are joined, never committed", p.key), retryable: false });
        }
        let u: Upload = serde_json::from_value(p.staging.clone()).map_err(|e| BackendError {
            message: format!("the checkpoint's record of {} is not an S3 upload ({e}); the sink's path changed kind since the checkpoint", p.key),
            retryable: false,
        })?;
        let key = self.full_key(&p.key);
        crate::checkpoint::s3::ensure_lease()
            .await
            .map_err(|m| BackendError {
                message: format!("not committing s3://{}/{key}: {m}", self.url.bucket),
                retryable: false,
            })?;
        let different = |etag: &str| {
            BackendError {
            message: format!(
                "cannot commit s3://{}/{key}: another object (ETag {etag}) is already there; refusing to overwrite it (another run or a restored old checkpoint wrote it)",
                self.url.bucket
            ),
            retryable: false,
        }
        };
        if let Some((etag, nonce)) = self.head(&key).await? {
            return if Self::is_ours(&u, &etag, nonce.as_deref()) {
                Ok(())
            } else {
                Err(different(&etag))
            };
        }
        let client = self.client().await;
        let parts: Vec<CompletedPart> = u
            .parts
            .iter()
            .enumerate()
            .map(|(i, e)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(e)
                    .build()
            })
            .collect();
        let done = self
            .call("CompleteMultipartUpload", &key, |_| {
                let req = client
                    .complete_multipart_upload()
                    .bucket(&self.url.bucket)
                    .key(&key)
                    .upload_id(&u.upload_id)
                    .if_none_match("*")
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    );
                async move {
                    match req.send().await {
                        Ok(_) => Ok(true),
                        Err(e) => {
                            let c = classify(&e);
                            // Completed by an earlier attempt whose answer was lost, or
                            // the key was taken meanwhile: the HEAD below decides.
                            if c.code == "NoSuchUpload" || c.conflict || c.not_found {
                                Ok(false)
                            } else {
                                Err(c)
                            }
                        }
                    }
                }
            })
            .await?;
        if done {
            return Ok(());
        }
        match self.head(&key).await? {
            Some((etag, nonce)) if Self::is_ours(&u, &etag, nonce.as_deref()) => Ok(()),
            Some((etag, _)) => Err(different(&etag)),
            None => Err(BackendError {
                message: format!(
                    "cannot commit s3://{}/{key}: its multipart upload {} is gone (aborted outside this pipeline, or by a bucket lifecycle rule); the data of that checkpoint is lost",
                    self.url.bucket, u.upload_id
                ),
                retryable: false,
            }),
        }
    }

    async fn staged(&self) -> Result<Vec<String>, BackendError> {
        let uploads = self.uploads().await?.into_iter().map(|(k, _)| k);
        let chunks = self.chunk_objects().await?;
        let keys: BTreeSet<String> = uploads.chain(chunks).filter_map(|k| self.relative(&k)).collect();
        Ok(keys.into_iter().collect())
    }

    async fn discard(&self, keys: &[String]) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        for (key, id) in self.uploads().await? {
            if self.relative(&key).is_some_and(|r| wanted.contains(r.as_str())) {
                self.abort(&key, &id).await?;
                tracing::debug!(%key, upload_id = %id, "aborted a staged upload");
            }
        }
        let client = self.client().await;
        for key in self.chunk_objects().await? {
            if self.relative(&key).is_some_and(|r| wanted.contains(r.as_str())) {
                // Idempotent: deleting a deleted object succeeds.
                self.call("DeleteObject", &key, |_| {
                    let req = client.delete_object().bucket(&self.url.bucket).key(&key);
                    async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn mark_generation(&self, generation: &str) -> Result<(), BackendError> {
        let client = self.client().await;
        let key = self.full_key(&format!("{MARKERS}/{generation}"));
        let o = &self.objects;
        self.call("PutObject", &key, |_| {
            let req = client
                .put_object()
                .bucket(&self.url.bucket)
                .key(&key)
                .body(ByteStream::from_static(b""))
                .set_server_side_encryption(o.sse())
                .set_ssekms_key_id(o.kms_key_id.clone());
            async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
        })
        .await
    }

    async fn generations(&self) -> Result<Vec<String>, BackendError> {
        let client = self.client().await;
        let prefix = self.full_key(&format!("{MARKERS}/"));
        let mut token: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let page = self
                .call("ListObjectsV2", &prefix, |_| {
                    let req = client
                        .list_objects_v2()
                        .bucket(&self.url.bucket)
                        .prefix(&prefix)
                        .set_continuation_token(token.clone());
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&prefix).map(str::to_owned)),
            );
            token = page.next_continuation_token().map(str::to_owned);
            if page.is_truncated() != Some(true) || token.is_none() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        // Two parts "a" and "b": MD5s 0cc175b9... and 92eb5ffe...
        let parts = vec![
            "0cc175b9c0f1b6a831c399e269772661".to_owned(),
            "\"92eb5ffee6ae2fec3ad71c777531578f\"".to_owned(),
        ];
        let mut h = Md5::new();
        h.update(Md5::digest(b"a"));
        h.update(Md5::digest(b"b"));
        assert_eq!(
            multipart_etag(&parts),
            Some(format!("{}-2", hex::encode(h.finalize())))
        );
        assert_eq!(multipart_etag(&["not-md5".to_owned()]), None);
    }
}
