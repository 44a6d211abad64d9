//! The S3 client (Ceph RGW in production, any S3 endpoint): HEAD, LIST, guarded
//! ranged GETs and conditional PUTs, each bounded by a deadline and counted. Every
//! GET answer is checked against what was asked ([`answer`]) before a byte of it is
//! kept. Images opened on it are in [`object`], conditional writes in [`write`], the
//! counters in [`stats`].

mod answer;
mod object;
pub mod profiles;
mod stats;
mod write;

pub use answer::{same_etag, BadAnswer};
pub use object::{parse_url, BodyStream, S3Object, S3Store};
pub use stats::S3Stats;
pub use write::PutCondition;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedAsyncSleep};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_smithy_async::rt::sleep::TokioSleep;
use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::StoreError;
use answer::{check_headers, Asked, BodyBound, Headers};

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
    /// The object's size, when known: the `Content-Range` must say it.
    size: Option<u64>,
    offset: u64,
    len: usize,
    /// Kinds of bad answer already logged for this object (see [`BadAnswer::bit`]).
    logged: Option<&'a AtomicU8>,
}

impl<'a> Ranged<'a> {
    fn new(bucket: &'a str, key: &'a str, etag: Option<&'a str>, offset: u64, len: usize) -> Self {
        Ranged {
            name: format!("s3://{bucket}/{key}"),
            bucket,
            key,
            etag,
            size: None,
            offset,
            len,
            logged: None,
        }
    }

    fn asked(&self) -> Asked<'a> {
        Asked {
            offset: self.offset,
            len: self.len as u64,
            size: self.size,
            etag: self.etag,
        }
    }
}

/// Why one GET attempt failed: worth another attempt or not.
enum BodyFailure {
    Retry(String),
    /// An answer that is not the one asked for: retried, never kept.
    Bad(BadAnswer),
    Final(StoreError),
}

/// A client plus what all stores on it share.
#[derive(Debug, Clone)]
pub struct S3Client {
    client: aws_sdk_s3::Client,
    permits: Arc<Semaphore>,
    deadline: Duration,
    attempts: u32,
    /// How `If-Match` is sent on a PUT (see [`S3Client::put_if`]).
    quote_put_if_match: Arc<std::sync::atomic::AtomicBool>,
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
            quote_put_if_match: Arc::default(),
            stats: Arc::new(S3Stats::default()),
        }
    }

    /// Send one ranged GET (holding a slot of the parallelism bound) and check the
    /// answer's headers against what was asked; the body is the caller's to read,
    /// within [`BodyBound`].
    async fn send_get(
        &self,
        r: &Ranged<'_>,
    ) -> Result<(OwnedSemaphorePermit, GetObjectOutput), BodyFailure> {
        let (name, etag) = (&r.name, r.etag);
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| BodyFailure::Final(StoreError::Unavailable("shutting down".into())))?;
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
            BodyFailure::Final(match status(&e) {
                Some(412) => StoreError::Stale(name.clone()),
                Some(404) => StoreError::NotFound(name.clone()),
                _ => StoreError::Unavailable(format!("GET {name}: {}", describe(&e))),
            })
        })?;
        let headers = Headers {
            content_range: out.content_range(),
            content_length: out.content_length().and_then(|l| u64::try_from(l).ok()),
            etag: out.e_tag(),
        };
        // Dropping the answer here closes its connection: a refused body is never read.
        check_headers(&r.asked(), &headers).map_err(|e| self.refuse(r, e))?;
        Ok((permit, out))
    }

    /// Count and (once per object and kind) log an answer that is not the one asked.
    fn refuse(&self, r: &Ranged<'_>, e: BadAnswer) -> BodyFailure {
        self.stats.bad_answer(&e);
        let first = r
            .logged
            .is_none_or(|l| l.fetch_or(e.bit(), Ordering::Relaxed) & e.bit() == 0);
        if first {
            warn!(object = %r.name, offset = r.offset, len = r.len, kind = e.kind(), "S3 answer refused, never cached: {e}");
        }
        BodyFailure::Bad(e)
    }

    /// One ranged GET, its body read within the range's length (a longer body is cut
    /// off at the first piece past it, not read to its end).
    async fn get_once(&self, r: &Ranged<'_>) -> Result<Bytes, BodyFailure> {
        let (name, len) = (&r.name, r.len);
        let (_permit, out) = self.send_get(r).await?;
        let mut body = out.body;
        let mut bound = BodyBound::new(len as u64);
        let mut whole: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        loop {
            let piece = match body.next().await {
                None => break,
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(BodyFailure::Retry(format!("GET {name}: body: {e}")));
                }
            };
            bound.take(piece.len()).map_err(|e| self.refuse(r, e))?;
            // The usual answer is one piece: kept as it is, no copy.
            match whole.take() {
                None if buf.is_empty() => whole = Some(piece),
                first => {
                    if buf.capacity() == 0 {
                        buf.reserve(len);
                    }
                    if let Some(f) = first {
                        buf.extend_from_slice(&f);
                    }
                    buf.extend_from_slice(&piece);
                }
            }
        }
        bound.end().map_err(|e| self.refuse(r, e))?;
        let bytes = whole.unwrap_or_else(|| buf.freeze());
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
                    // Without ListBucket, S3 says 403 for a key that does not exist.
                    Some(403) => StoreError::Forbidden(format!("HEAD {name}: HTTP 403")),
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
            version_id: out.version_id().map(str::to_string),
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
            return Err(StoreError::TooLarge(format!(
                "s3://{bucket}/{key} is {size} bytes, more than the {max} allowed"
            )));
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        let mut r = Ranged::new(bucket, key, etag, 0, size as usize);
        r.size = Some(size);
        self.get(&r).await
    }

    /// `offset..offset + len` of an object of `size` bytes at `etag`: one guarded,
    /// checked ranged GET (for tools that read a whole image in pieces).
    pub async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        size: u64,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, StoreError> {
        let mut r = Ranged::new(bucket, key, Some(etag), offset, len);
        r.size = Some(size);
        self.get(&r).await
    }

    async fn get(&self, r: &Ranged<'_>) -> Result<Bytes, StoreError> {
        let name = &r.name;
        let started = Instant::now();
        let work = async {
            // The SDK retries what fails before the body starts; a body cut short, of
            // the wrong length or for the wrong range is retried here, within the same
            // deadline.
            let mut attempt = 1;
            loop {
                let msg = match self.get_once(r).await {
                    Ok(b) => return Ok(b),
                    Err(BodyFailure::Final(e)) => return Err(e),
                    // A server that answers every attempt with the whole object
                    // ignores Range for good: the LUN must say so, not download
                    // whole objects behind the operator's back.
                    Err(BodyFailure::Bad(e @ BadAnswer::RangeIgnored { .. }))
                        if attempt >= self.attempts =>
                    {
                        return Err(StoreError::BadServer(format!("GET {name}: {e}")))
                    }
                    Err(BodyFailure::Bad(e)) => format!("GET {name}: {e}"),
                    Err(BodyFailure::Retry(msg)) => msg,
                };
                if attempt >= self.attempts {
                    return Err(StoreError::Unavailable(msg));
                }
                tracing::debug!(object = %name, attempt, error = %msg, "S3 GET failed: retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                attempt += 1;
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
    /// Unquoted, as S3 gave it: what every GET of the object is guarded by.
    pub etag: Option<String>,
    /// The version id, in a versioned bucket.
    pub version_id: Option<String>,
    pub metadata: HashMap<String, String>,
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
