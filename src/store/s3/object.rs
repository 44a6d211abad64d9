//! One image object in S3, opened at one version: ranged GETs guarded by `If-Match` on
//! the ETag S3 gave at open, so bytes of two versions are never mixed. A 412 marks it
//! stale (every later read fails until the image is reopened); a server that ignores
//! `Range` for good makes it NOT READY for a while, with a log line that says so,
//! rather than whole objects being downloaded for every read.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use tracing::{debug, error, warn};

use super::answer::BodyBound;
use super::{BodyFailure, ObjectInfo, Ranged, S3Client};
use crate::store::index::{ChunkIndex, MAX_INDEX, SUFFIX};
use crate::store::{BlockStore, ReadFuture, StoreError, StreamFuture};

/// After this many reads in a row found the server ignoring `Range` on every attempt
/// (a flaky proxy may do it once), it is taken to ignore it for good.
const RANGE_IGNORED_READS: u32 = 3;
/// Then reads fail at once for this long before one is tried again.
const RANGE_REFUSED_PAUSE: Duration = Duration::from_secs(30);

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
    /// Kinds of bad answer already logged for this object.
    logged: AtomicU8,
    /// Reads in a row whose every attempt found Range ignored.
    range_ignored_reads: AtomicU32,
    /// Milliseconds since `opened` when Range was found ignored for good (0: never).
    range_refused_at: AtomicU64,
    opened: Instant,
    /// The chunk digest index of this version, once looked for (`None`: there is none
    /// that describes it).
    index: tokio::sync::OnceCell<Option<Arc<ChunkIndex>>>,
    /// An index whose chunks the cache's cannot be checked against was reported.
    index_unusable: AtomicBool,
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
            logged: AtomicU8::new(0),
            range_ignored_reads: AtomicU32::new(0),
            range_refused_at: AtomicU64::new(0),
            opened: Instant::now(),
            index: tokio::sync::OnceCell::new(),
            index_unusable: AtomicBool::new(false),
        })
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    fn name(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn range(&self, offset: u64, len: usize) -> Ranged<'_> {
        let mut r = Ranged::new(&self.bucket, &self.key, self.etag.as_deref(), offset, len);
        r.size = Some(self.size);
        r.logged = Some(&self.logged);
        r
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether reads are paused because the server ignores `Range`.
    fn range_refused(&self) -> bool {
        let at = self.range_refused_at.load(Ordering::Relaxed);
        at != 0 && self.now_ms().saturating_sub(at) < RANGE_REFUSED_PAUSE.as_millis() as u64
    }

    /// Note what a failed read says about the object: changed (412), deleted, or
    /// behind a server that ignores Range.
    fn note_failure(&self, e: &StoreError) {
        match e {
            StoreError::NotFound(_) => self.gone.store(true, Ordering::Relaxed),
            StoreError::Stale(name) if !self.stale.swap(true, Ordering::Relaxed) => {
                warn!(object = %name, etag = ?self.etag, "object changed since it was opened (412): LUN is stale until reopened");
            }
            StoreError::BadServer(why) => {
                if self.range_ignored_reads.fetch_add(1, Ordering::Relaxed) + 1
                    < RANGE_IGNORED_READS
                {
                    return;
                }
                if self.range_refused_at.swap(self.now_ms(), Ordering::Relaxed) == 0 {
                    error!(object = %self.name(), "{why}: every attempt of {RANGE_IGNORED_READS} reads in a row was answered with the whole object; the LUN is NOT READY (s3lun does not download whole objects for ranged reads); check the S3 server or the proxy in front of it");
                }
            }
            _ => {}
        }
    }

    /// Why no read is tried now, if none is.
    fn refused(&self) -> Option<StoreError> {
        if self.is_stale() {
            return Some(StoreError::Stale(self.name()));
        }
        if self.range_refused() {
            return Some(StoreError::BadServer(format!(
                "{}: the S3 server ignores Range",
                self.name()
            )));
        }
        None
    }

    /// Look for the sidecar index once, before the first byte is fetched: where one
    /// describes this version, no fetched byte goes unchecked. S3 unreachable is an
    /// error (looked for again at the next read); a missing, garbage or other
    /// version's index is no index (with a log line for the last two).
    async fn load_index(&self) -> Result<(), StoreError> {
        let Some(etag) = self.etag.as_deref() else {
            return Ok(());
        };
        self.index
            .get_or_try_init(|| async {
                let key = format!("{}{SUFFIX}", self.key);
                match self.client.get_small_tagged(&self.bucket, &key, MAX_INDEX).await {
                    Err(StoreError::NotFound(_)) => Ok(None),
                    // A reader without ListBucket gets 403 for a missing key; an index
                    // past its bound is not ours.
                    Err(StoreError::Forbidden(why) | StoreError::TooLarge(why)) => {
                        debug!(object = %self.name(), "no chunk digest index readable: {why}");
                        Ok(None)
                    }
                    Err(e) => Err(e),
                    // A single-PUT object's ETag is its md5: an index damaged on the
                    // way would switch checking off, so it is fetched again instead.
                    Ok((bytes, Some(tag))) if !md5_matches(&bytes, &tag) => {
                        Err(StoreError::Unavailable(format!(
                            "s3://{}/{key}: body does not match its ETag {tag}",
                            self.bucket
                        )))
                    }
                    Ok((bytes, _)) => match ChunkIndex::parse(&bytes, etag, self.size) {
                        Ok(ix) => {
                            self.client
                                .stats
                                .indexed_images
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::info!(object = %self.name(), chunk_size = ix.chunk_size, "chunk digest index found: every chunk fetched is checked against it");
                            Ok(Some(Arc::new(ix)))
                        }
                        Err(e) => {
                            warn!(object = %self.name(), index = %key, "chunk digest index not used: {e}");
                            Ok(None)
                        }
                    },
                }
            })
            .await
            .map(|_| ())
    }

    /// Check bytes read at `offset` against the index, if there is one.
    fn verify(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let Some(Some(ix)) = self.index.get() else {
            return Ok(());
        };
        match ix.check(offset, data) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.client
                    .stats
                    .index_mismatches
                    .fetch_add(1, Ordering::Relaxed);
                warn!(object = %self.name(), offset, len = data.len(), "bytes from S3 do not match the chunk digest index: not cached, not served");
                Err(StoreError::Corrupt(format!(
                    "{} at {offset}: bytes do not match the chunk digest index",
                    self.name()
                )))
            }
            Err(why) => {
                if !self.index_unusable.swap(true, Ordering::Relaxed) {
                    error!(object = %self.name(), "chunk digest index cannot check the cache's chunks ({why}): make the cache's chunk_size a multiple of the index's {}", ix.chunk_size);
                }
                Ok(())
            }
        }
    }

    async fn fetch(self: Arc<Self>, offset: u64, len: usize) -> Result<bytes::Bytes, StoreError> {
        if let Some(e) = self.refused() {
            return Err(e);
        }
        self.load_index().await?;
        let started = Instant::now();
        let r = self.client.get(&self.range(offset, len)).await;
        match &r {
            Err(e) => self.note_failure(e),
            Ok(_) => {
                self.range_ignored_reads.store(0, Ordering::Relaxed);
                self.range_refused_at.store(0, Ordering::Relaxed);
            }
        }
        debug!(offset, len, etag = ?self.etag, ok = r.is_ok(), micros = started.elapsed().as_micros() as u64, "S3 GET");
        r
    }

    /// One GET of `offset..offset + len` whose body is handed on as it arrives, for
    /// read-ahead: the first chunk of a window is served before the last arrives. The
    /// headers are checked before the first byte, and the body is cut off at the first
    /// piece past the range (the reader sees an error, and fetches what is left chunk
    /// by chunk).
    async fn stream(self: Arc<Self>, offset: u64, len: usize) -> Result<BodyStream, StoreError> {
        if let Some(e) = self.refused() {
            return Err(e);
        }
        self.load_index().await?;
        let range = self.range(offset, len);
        let name = range.name.clone();
        let sent = tokio::time::timeout(self.client.deadline, self.client.send_get(&range))
            .await
            .unwrap_or_else(|_| {
                Err(BodyFailure::Final(StoreError::Unavailable(format!(
                    "GET {name}: deadline passed"
                ))))
            });
        let (permit, out) = match sent {
            Ok(x) => x,
            Err(BodyFailure::Final(e)) => {
                self.note_failure(&e);
                return Err(e);
            }
            Err(BodyFailure::Bad(e)) => {
                return Err(StoreError::Unavailable(format!("GET {name}: {e}")))
            }
            Err(BodyFailure::Retry(msg)) => return Err(StoreError::Unavailable(msg)),
        };
        // A streamed body is handed on chunk by chunk before its end is seen, so its
        // length must be known first: with a Content-Length equal to the range (the
        // headers were checked) the client never yields a byte past it. A body of
        // unknown length (chunked) is not streamed: the reader's chunks are fetched
        // one GET each, each body read whole and bounded before a byte is kept.
        if out.content_length().and_then(|l| u64::try_from(l).ok()) != Some(len as u64) {
            return Err(StoreError::Unavailable(format!(
                "GET {name}: no Content-Length: not streamed"
            )));
        }
        debug!(offset, len, "S3 GET (streamed)");
        let stats = Arc::clone(&self.client.stats);
        let bound = BodyBound::new(len as u64);
        let body = futures::stream::unfold(
            Some((out.body, permit, stats, name, bound, self)),
            move |state| async move {
                let (mut body, permit, stats, name, mut bound, obj) = state?;
                match body.next().await {
                    Some(Ok(b)) => {
                        if let Err(e) = bound.take(b.len()) {
                            let f = obj.client.refuse(&obj.range(offset, len), e);
                            let msg = match f {
                                BodyFailure::Bad(e) => format!("GET {name}: {e}"),
                                _ => format!("GET {name}: refused"),
                            };
                            // The stream ends after this error: the connection closes.
                            return Some((Err(StoreError::Unavailable(msg)), None));
                        }
                        stats.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        Some((Ok(b), Some((body, permit, stats, name, bound, obj))))
                    }
                    Some(Err(e)) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        let err = StoreError::Unavailable(format!("GET {name}: body: {e}"));
                        Some((Err(err), None))
                    }
                    None => None,
                }
            },
        );
        Ok(Box::pin(body))
    }
}

/// Whether `bytes` match `etag` where the ETag is a plain md5 (a single PUT); a
/// multipart or other ETag says nothing about the bytes and passes.
fn md5_matches(bytes: &[u8], etag: &str) -> bool {
    use md5::{Digest, Md5};
    let e = etag.trim_matches('"');
    if e.len() != 32 || !e.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    hex::encode(Md5::digest(bytes)).eq_ignore_ascii_case(e)
}

/// A GET body as it arrives.
pub type BodyStream = BoxStream<'static, Result<bytes::Bytes, StoreError>>;

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
        } else if self.0.gone.load(Ordering::Relaxed) || self.0.range_refused() {
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
            return ReadFuture::Ready(Ok(bytes::Bytes::new()));
        }
        let obj = Arc::clone(&self.0);
        ReadFuture::Pending(Box::pin(obj.fetch(offset, len)))
    }

    fn read_stream(&self, offset: u64, len: usize) -> Option<StreamFuture> {
        Some(Box::pin(Arc::clone(&self.0).stream(offset, len)))
    }

    fn verify(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        self.0.verify(offset, data)
    }
}

/// Split `s3://bucket/key`.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}
