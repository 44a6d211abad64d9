//! Images in S3 (Ceph RGW in production, any S3 endpoint): one HEAD at open for size,
//! ETag and the `md5sum` metadata, then ranged GETs, each guarded by `If-Match` on the
//! ETag seen at open, so bytes of two versions of an object are never mixed. A 412
//! marks the store stale: every later read fails until the image is reopened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedAsyncSleep};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_smithy_async::rt::sleep::TokioSleep;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::{BlockStore, ReadFuture, StoreError, StreamFuture};

/// Where and how to reach S3.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// GETs in flight at once, per target.
    pub max_parallel: usize,
    /// Attempts per request (retries with backoff and jitter on 5xx, timeouts and
    /// connection errors).
    pub attempts: u32,
    /// Bound on one attempt.
    pub attempt_timeout: Duration,
    /// Bound on a read, retries included: after it the initiator gets a SCSI error.
    pub deadline: Duration,
    /// PEM certificates trusted for an https endpoint besides the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// One ranged GET of one object, guarded by the ETag when there is one.
struct Ranged<'a> {
    /// `s3://bucket/key`, for messages.
    name: String,
    bucket: &'a str,
    key: &'a str,
    etag: Option<&'a str>,
    offset: u64,
    len: usize,
}

impl<'a> Ranged<'a> {
    fn new(bucket: &'a str, key: &'a str, etag: Option<&'a str>, offset: u64, len: usize) -> Self {
        Ranged {
            name: format!("s3://{bucket}/{key}"),
            bucket,
            key,
            etag,
            offset,
            len,
        }
    }
}

/// Why one GET attempt failed: worth another attempt or not.
enum BodyFailure {
    Retry(String),
    Final(StoreError),
}

/// Counters shared by every S3 store of a target.
#[derive(Debug, Default)]
pub struct S3Stats {
    pub requests: AtomicU64,
    pub gets: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub latency_micros: AtomicU64,
    /// HEADs and LIST pages (the catalog's requests besides manifest GETs).
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    /// Time from a GET sent to its answer's headers (the first byte).
    pub get_latency: Arc<crate::latency::Latency>,
    /// Unix milliseconds S3 last answered (any HTTP status), and last failed to (no
    /// connection, timeout): `/readyz` and `/status` tell whether it is reachable.
    pub last_answer: AtomicU64,
    pub last_unreachable: AtomicU64,
}

impl S3Stats {
    /// Record whether the server answered a request (`status` of the failure, if
    /// it failed).
    fn outcome(&self, failed_status: Option<Option<u16>>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match failed_status {
            None | Some(Some(_)) => self.last_answer.store(now, Ordering::Relaxed),
            Some(None) => self.last_unreachable.store(now, Ordering::Relaxed),
        }
    }

    /// Not known to be unreachable: no request has failed to reach the server since
    /// its last answer.
    pub fn reachable(&self) -> bool {
        self.last_answer.load(Ordering::Relaxed) >= self.last_unreachable.load(Ordering::Relaxed)
    }
}

/// A client plus what all stores on it share.
#[derive(Debug, Clone)]
pub struct S3Client {
    client: aws_sdk_s3::Client,
    permits: Arc<Semaphore>,
    deadline: Duration,
    attempts: u32,
    pub stats: Arc<S3Stats>,
}

impl S3Client {
    pub fn new(s: &S3Settings) -> S3Client {
        let http = if s.endpoint.starts_with("https://") {
            use aws_smithy_http_client::tls;
            let b = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ));
            let b = match &s.ca_pem {
                None => b,
                Some(pem) => {
                    let trust = tls::TrustStore::default().with_pem_certificate(pem.clone());
                    match tls::TlsContext::builder().with_trust_store(trust).build() {
                        Ok(ctx) => b.tls_context(ctx),
                        Err(e) => {
                            warn!(error = %e, "[s3] ca_file unusable: system roots only");
                            b
                        }
                    }
                }
            };
            b.build_https()
        } else {
            aws_smithy_http_client::Builder::new().build_http()
        };
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&s.endpoint)
            .region(Region::new(s.region.clone()))
            // Path style always: virtual-host style cannot work against an IP.
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &s.access_key,
                &s.secret_key,
                None,
                None,
                "s3lun",
            ))
            .http_client(http)
            .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
            .retry_config(RetryConfig::standard().with_max_attempts(s.attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(s.attempt_timeout.min(Duration::from_secs(5)))
                    .operation_attempt_timeout(s.attempt_timeout)
                    .build(),
            )
            .build();
        S3Client {
            client: aws_sdk_s3::Client::from_conf(config),
            permits: Arc::new(Semaphore::new(s.max_parallel.max(1))),
            deadline: s.deadline,
            attempts: s.attempts.max(1),
            stats: Arc::new(S3Stats::default()),
        }
    }

    /// Send one ranged GET (holding a slot of the parallelism bound) and check the
    /// answer's ETag; the body is the caller's to read.
    async fn send_get(
        &self,
        r: &Ranged<'_>,
    ) -> Result<(OwnedSemaphorePermit, GetObjectOutput), StoreError> {
        let (name, etag) = (&r.name, r.etag);
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let end = r.offset + r.len as u64 - 1;
        let mut req = self
            .client
            .get_object()
            .bucket(r.bucket)
            .key(r.key)
            .range(format!("bytes={}-{end}", r.offset));
        if let Some(e) = etag {
            req = req.if_match(format!("\"{e}\""));
        }
        let sent = Instant::now();
        let out = req.send().await;
        self.stats.get_latency.observe(sent.elapsed());
        self.stats.outcome(out.as_ref().err().map(status));
        let out = out.map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            match status(&e) {
                Some(412) => StoreError::Stale(name.clone()),
                Some(404) => StoreError::NotFound(name.clone()),
                _ => StoreError::Unavailable(format!("GET {name}: {}", describe(&e))),
            }
        })?;
        // Something between us and S3 that ignores If-Match must not slip another
        // version's bytes in.
        if let (Some(want), Some(got)) = (etag, out.e_tag()) {
            if got.trim_matches('"') != want {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Stale(format!(
                    "{name}: ETag {got} where {want} was expected"
                )));
            }
        }
        Ok((permit, out))
    }

    /// One ranged GET, its body checked against the range and the expected ETag.
    async fn get_once(&self, r: &Ranged<'_>) -> Result<Bytes, BodyFailure> {
        let (name, len) = (&r.name, r.len);
        let (_permit, out) = self.send_get(r).await.map_err(BodyFailure::Final)?;
        let body = out.body.collect().await.map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            BodyFailure::Retry(format!("GET {name}: body: {e}"))
        })?;
        let bytes = body.into_bytes();
        if bytes.len() != len {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(BodyFailure::Retry(format!(
                "GET {name}: {} bytes for a {len}-byte range",
                bytes.len()
            )));
        }
        self.stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// HEAD an object: its size, ETag (unquoted) and user metadata.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, StoreError> {
        let name = format!("s3://{bucket}/{key}");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.heads.fetch_add(1, Ordering::Relaxed);
        let fut = self.client.head_object().bucket(bucket).key(key).send();
        let out = match tokio::time::timeout(self.deadline, fut).await {
            Err(_) => {
                self.stats.outcome(Some(None));
                return Err(StoreError::Unavailable(format!(
                    "HEAD {name}: deadline passed"
                )));
            }
            Ok(Err(e)) => {
                self.stats.outcome(Some(status(&e)));
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(match status(&e) {
                    Some(404) => StoreError::NotFound(name),
                    _ => StoreError::Unavailable(format!("HEAD {name}: {}", describe(&e))),
                });
            }
            Ok(Ok(o)) => {
                self.stats.outcome(None);
                o
            }
        };
        let size = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| StoreError::Unavailable(format!("HEAD {name}: no Content-Length")))?;
        Ok(ObjectInfo {
            size,
            etag: out.e_tag().map(unquote),
            metadata: out.metadata().cloned().unwrap_or_default(),
        })
    }

    /// Objects under `prefix` (key, size, ETag), every page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_page(bucket, prefix, token.as_deref(), None)
                .await?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    let size = o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                    out.push(Listed {
                        key: k.to_string(),
                        size,
                        etag: o.e_tag().map(unquote),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Whether `bucket` can be listed under `prefix` (one key asked for): for
    /// `s3lun check`.
    pub async fn can_list(&self, bucket: &str, prefix: &str) -> Result<(), StoreError> {
        self.list_page(bucket, prefix, None, Some(1))
            .await
            .map(|_| ())
    }

    /// One LIST page (after `token`, at most `max_keys`), counted and bounded by the
    /// deadline.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<i32>,
    ) -> Result<ListObjectsV2Output, StoreError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        let req = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.map(str::to_string))
            .set_max_keys(max_keys);
        match tokio::time::timeout(self.deadline, req.send()).await {
            Err(_) => {
                self.stats.outcome(Some(None));
                Err(StoreError::Unavailable(format!(
                    "LIST s3://{bucket}/{prefix}: deadline passed"
                )))
            }
            Ok(Err(e)) => {
                self.stats.outcome(Some(status(&e)));
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(match status(&e) {
                    Some(404) => StoreError::NotFound(format!("s3://{bucket}")),
                    _ => StoreError::Unavailable(format!(
                        "LIST s3://{bucket}/{prefix}: {}",
                        describe(&e)
                    )),
                })
            }
            Ok(Ok(p)) => {
                self.stats.outcome(None);
                Ok(p)
            }
        }
    }

    /// A whole small object (a manifest), refused above `max` bytes.
    pub async fn get_small(&self, bucket: &str, key: &str, max: u64) -> Result<Bytes, StoreError> {
        Ok(self.get_small_tagged(bucket, key, max).await?.0)
    }

    /// A whole small object and the ETag it was read at (the GET is guarded by it,
    /// so the bytes are that version's).
    pub async fn get_small_tagged(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
    ) -> Result<(Bytes, Option<String>), StoreError> {
        let info = self.head(bucket, key).await?;
        let bytes = self
            .get_known(bucket, key, info.size, info.etag.as_deref(), max)
            .await?;
        Ok((bytes, info.etag))
    }

    /// A whole small object whose size (and ETag) are known, from a HEAD or a
    /// listing: one GET, guarded by the ETag; refused above `max` bytes.
    pub async fn get_known(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        etag: Option<&str>,
        max: u64,
    ) -> Result<Bytes, StoreError> {
        if size > max {
            return Err(StoreError::Unavailable(format!(
                "s3://{bucket}/{key} is {size} bytes, more than the {max} allowed"
            )));
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        self.get(&Ranged::new(bucket, key, etag, 0, size as usize))
            .await
    }

    /// Write a small object only if `cond` holds at the server; returns its new ETag.
    /// A failed precondition (412, or 409 for a conditional write racing another)
    /// is `Stale`; an `If-Match` on a missing object is `NotFound`.
    pub async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        cond: PutCondition<'_>,
    ) -> Result<Option<String>, StoreError> {
        let name = format!("s3://{bucket}/{key}");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into());
        req = match cond {
            PutCondition::IfMatch(etag) => req.if_match(format!("\"{etag}\"")),
            PutCondition::IfNoneMatch => req.if_none_match("*"),
            PutCondition::Always => req,
        };
        match tokio::time::timeout(self.deadline, req.send()).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "PUT {name}: deadline passed"
            ))),
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(match status(&e) {
                    Some(412 | 409) => StoreError::Stale(name),
                    Some(404) => StoreError::NotFound(name),
                    _ => StoreError::Unavailable(format!("PUT {name}: {}", describe(&e))),
                })
            }
            Ok(Ok(out)) => Ok(out.e_tag().map(unquote)),
        }
    }

    /// Delete an object (missing is fine).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let name = format!("s3://{bucket}/{key}");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let req = self.client.delete_object().bucket(bucket).key(key).send();
        match tokio::time::timeout(self.deadline, req).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "DELETE {name}: deadline passed"
            ))),
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Unavailable(format!(
                    "DELETE {name}: {}",
                    describe(&e)
                )))
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn get(&self, r: &Ranged<'_>) -> Result<Bytes, StoreError> {
        let name = &r.name;
        let started = Instant::now();
        let work = async {
            // The SDK retries what fails before the body starts; a body cut short or
            // of the wrong length is retried here, within the same deadline.
            let mut attempt = 1;
            loop {
                match self.get_once(r).await {
                    Err(BodyFailure::Retry(msg)) if attempt < self.attempts => {
                        warn!(object = %name, attempt, error = %msg, "S3 body failed: retrying");
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                        attempt += 1;
                    }
                    Err(BodyFailure::Retry(msg)) => return Err(StoreError::Unavailable(msg)),
                    Err(BodyFailure::Final(e)) => return Err(e),
                    Ok(b) => return Ok(b),
                }
            }
        };
        let r = match tokio::time::timeout(self.deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "GET {name}: deadline passed"
            ))),
        };
        self.stats
            .latency_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        r
    }
}

fn unquote(e: &str) -> String {
    e.trim_matches('"').to_string()
}

fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn describe<E: std::fmt::Debug>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String {
    match e {
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) => format!("connection failed: {d:?}"),
        SdkError::ResponseError(_) => "bad response".into(),
        SdkError::ServiceError(s) => format!("HTTP {}", s.raw().status().as_u16()),
        other => format!("{other:?}"),
    }
}

/// The precondition of a conditional PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition<'a> {
    /// `If-Match: "<etag>"`: replace exactly the version that was read.
    IfMatch(&'a str),
    /// `If-None-Match: *`: create, never overwrite.
    IfNoneMatch,
    /// No precondition (the probe's first write only).
    Always,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Unquoted.
    pub etag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// One object, opened at one version.
#[derive(Debug)]
pub struct S3Object {
    client: S3Client,
    bucket: String,
    key: String,
    size: u64,
    etag: Option<String>,
    stale: AtomicBool,
    /// A GET found the object deleted.
    gone: AtomicBool,
}

impl S3Object {
    pub fn new(client: S3Client, bucket: &str, key: &str, info: &ObjectInfo) -> Arc<S3Object> {
        Arc::new(S3Object {
            client,
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: info.size,
            etag: info.etag.clone(),
            stale: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        })
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    fn range(&self, offset: u64, len: usize) -> Ranged<'_> {
        Ranged::new(&self.bucket, &self.key, self.etag.as_deref(), offset, len)
    }

    /// A 412 (or an ETag other than ours) marks the object stale, once, with a log line.
    fn note_stale(&self, e: &StoreError) {
        if let StoreError::NotFound(_) = e {
            self.gone.store(true, Ordering::Relaxed);
        }
        if let StoreError::Stale(name) = e {
            if !self.stale.swap(true, Ordering::Relaxed) {
                warn!(object = %name, etag = ?self.etag, "object changed since it was opened (412): LUN is stale until reopened");
            }
        }
    }

    async fn fetch(self: Arc<Self>, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        if self.is_stale() {
            return Err(StoreError::Stale(format!(
                "s3://{}/{}",
                self.bucket, self.key
            )));
        }
        let started = Instant::now();
        let r = self.client.get(&self.range(offset, len)).await;
        if let Err(e) = &r {
            self.note_stale(e);
        }
        debug!(offset, len, etag = ?self.etag, ok = r.is_ok(), micros = started.elapsed().as_micros() as u64, "S3 GET");
        r
    }
}

impl S3Object {
    /// One GET of `offset..offset + len` whose body is handed on as it arrives, for
    /// read-ahead: the first chunk of a window is served before the last arrives.
    async fn stream(self: Arc<Self>, offset: u64, len: usize) -> Result<BodyStream, StoreError> {
        let range = self.range(offset, len);
        let name = range.name.clone();
        if self.is_stale() {
            return Err(StoreError::Stale(name));
        }
        let sent = tokio::time::timeout(self.client.deadline, self.client.send_get(&range))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "GET {name}: deadline passed"
                )))
            });
        let (permit, out) = match sent {
            Ok(x) => x,
            Err(e) => {
                self.note_stale(&e);
                return Err(e);
            }
        };
        debug!(offset, len, "S3 GET (streamed)");
        let stats = Arc::clone(&self.client.stats);
        let body = futures::stream::unfold(
            (out.body, permit, stats, name),
            |(mut body, permit, stats, name)| async move {
                match body.next().await {
                    Some(Ok(b)) => {
                        stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        Some((Ok(b), (body, permit, stats, name)))
                    }
                    Some(Err(e)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        let err = StoreError::Unavailable(format!("GET {name}: body: {e}"));
                        Some((Err(err), (body, permit, stats, name)))
                    }
                    None => None,
                }
            },
        );
        Ok(Box::pin(body))
    }
}

/// A GET body as it arrives.
pub type BodyStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// `BlockStore` over an `Arc<S3Object>` (the future needs to own it).
#[derive(Debug, Clone)]
pub struct S3Store(pub Arc<S3Object>);

impl BlockStore for S3Store {
    fn size(&self) -> u64 {
        self.0.size
    }

    fn status(&self) -> crate::store::StoreStatus {
        let health = if self.0.is_stale() {
            crate::store::Health::Stale
        } else if self.0.gone.load(Ordering::Relaxed) {
            crate::store::Health::NotReady
        } else {
            crate::store::Health::Ok
        };
        crate::store::StoreStatus {
            content_key: self.0.etag.clone(),
            cached: None,
            health,
        }
    }

    fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
        if len == 0 {
            return ReadFuture::Ready(Ok(Bytes::new()));
        }
        let obj = Arc::clone(&self.0);
        ReadFuture::Pending(Box::pin(obj.fetch(offset, len)))
    }

    fn read_stream(&self, offset: u64, len: usize) -> Option<StreamFuture> {
        Some(Box::pin(Arc::clone(&self.0).stream(offset, len)))
    }
}

/// Split `s3://bucket/key`.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://boot-images/PE/x.squashfs"),
            Some(("boot-images".into(), "PE/x.squashfs".into()))
        );
        assert_eq!(parse_url("s3://bucket/"), None);
        assert_eq!(parse_url("http://x/y"), None);
        assert_eq!(unquote("\"abc-2\""), "abc-2");
    }
}
