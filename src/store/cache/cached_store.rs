//! An image read through the cache: reads cut into chunks, answered at once when
//! every chunk is in memory; a miss fetched at once as one GET of the read's missing
//! chunks, ahead of any background work; read-ahead only for a reader that proved
//! sequential, by a fraction of what it proved; background prefetch by a boot profile
//! (and of whole images where configured); and the recording of this image's profile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::background::{self, Budget};
use super::chunk::ChunkKey;
use super::flight::{Fetch, Fill};
use super::profile::{Profile, ProfileStore, Recorder};
use super::sequential::{Rules, Streams};
use super::{lock, ChunkCache};
use crate::store::{BlockStore, ReadFuture, StoreStatus};

/// How far (in chunks) a read may land from where a stream ended and still continue
/// it: an initiator keeps several reads in flight, which arrive out of order.
const SEQUENTIAL_SLACK: u64 = 8;
/// Read-ahead is this fraction of the run a stream has proved sequential: a file's
/// reads stop at its end, and what was read ahead past it is waste, at most this
/// share of what was read (an eighth: a booting node reads hundreds of files).
const PROVEN_SHARE: u64 = 8;

/// A store read through the cache.
#[derive(Debug)]
pub struct CachedStore {
    inner: Arc<dyn BlockStore>,
    content: Arc<str>,
    pub(super) cache: Arc<ChunkCache>,
    size: u64,
    /// The sequential streams of its readers (sequential.rs).
    streams: Mutex<Streams>,
    /// Background fetching of this image.
    pub(super) budget: Arc<Budget>,
    profiles: Option<Arc<dyn ProfileStore>>,
    /// Reads are being recorded for this image's profile.
    recording: AtomicBool,
    /// A boot profile is guiding the image's first boots: it says what they read
    /// next, and read-ahead (a guess) stays off.
    guided: AtomicBool,
    recorder: Mutex<Option<Recorder>>,
    /// Woken by the image's first read (and by its drop): the profile task waits on
    /// it without keeping the store alive.
    first_read: Arc<Notify>,
    first_seen: AtomicBool,
}

impl CachedStore {
    /// A store through the cache, with no background work (see [`Self::open`]).
    pub fn new(
        inner: Arc<dyn BlockStore>,
        content_key: &str,
        cache: Arc<ChunkCache>,
    ) -> CachedStore {
        let b = &cache.settings.background;
        let budget = Arc::new(Budget::new(b.gets_per_image, b.image_bytes_per_sec));
        cache.hold(content_key, 1);
        CachedStore {
            size: inner.size(),
            inner,
            content: Arc::from(content_key),
            cache,
            streams: Mutex::new(Streams::default()),
            budget,
            profiles: None,
            recording: AtomicBool::new(false),
            guided: AtomicBool::new(false),
            recorder: Mutex::new(None),
            first_read: Arc::new(Notify::new()),
            first_seen: AtomicBool::new(false),
        }
    }

    /// A store through the cache that, where configured, prefetches the image whole
    /// and, from its first read on, by its published boot profile, or records and
    /// publishes its profile when there is none yet. Unless whole images are to be
    /// prefetched, opening makes no S3 request (a start-up without S3 serves from
    /// the state file and the cache).
    pub fn open(
        inner: Arc<dyn BlockStore>,
        content_key: &str,
        cache: Arc<ChunkCache>,
        profiles: Option<Arc<dyn ProfileStore>>,
    ) -> Arc<CachedStore> {
        let mut s = CachedStore::new(inner, content_key, cache);
        let enabled = s.cache.settings.profiles.enabled;
        s.profiles = profiles.filter(|_| enabled);
        s.recording.store(s.profiles.is_some(), Ordering::Relaxed);
        let s = Arc::new(s);
        let runtime = s.cache.runtime.clone();
        if s.size > 0 && s.size <= s.cache.settings.background.whole_image_max {
            // The last chunk first: filesystems keep metadata at the end (squashfs's
            // tables, GPT's backup header), which a mount reads before any file.
            // The rest in as many long streamed runs as the image may have GETs
            // (a run per GET, as few requests as the budget allows: readers cut
            // them for what they wait for).
            let n = s.chunks();
            let order = std::iter::once(n - 1).chain(0..n - 1).collect();
            let b = &s.cache.settings;
            let run = (s.size / b.background.gets_per_image.max(1) as u64 + 1).clamp(
                background::RUN_BYTES,
                (b.max_fetch as u64).max(background::RUN_BYTES),
            );
            runtime.spawn(background::prefetch(
                Arc::downgrade(&s),
                order,
                run,
                "whole image",
            ));
        }
        if let Some(p) = &s.profiles {
            let wake = Arc::clone(&s.first_read);
            runtime.spawn(profile_task(Arc::downgrade(&s), Arc::clone(p), wake));
        }
        s
    }

    fn chunk_len(&self, index: u64) -> usize {
        let cs = self.cache.settings.chunk_size as u64;
        (self.size - index * cs).min(cs) as usize
    }

    fn key(&self, index: u64) -> ChunkKey {
        ChunkKey {
            content: Arc::clone(&self.content),
            index,
        }
    }

    fn chunks(&self) -> u64 {
        self.size.div_ceil(self.cache.settings.chunk_size as u64)
    }

    /// Whether chunks `from..to` are all in memory or on disk.
    pub(super) fn all_present(&self, from: u64, to: u64) -> bool {
        (from..to.min(self.chunks())).all(|i| self.cache.has(&self.key(i)))
    }

    /// Start fetching the chunks `from..to` that are nowhere yet, in as few GETs as
    /// the fetch size allows.
    fn prefetch(&self, from: u64, to: u64, how: Fetch) {
        let keys = (from..to.min(self.chunks()))
            .map(|i| (self.key(i), self.chunk_len(i)))
            .collect();
        let offset = from * self.cache.settings.chunk_size as u64;
        self.cache.fetch_runs(&self.inner, keys, offset, how);
    }

    /// [`Self::prefetch`], and the futures of the chunks on their way (taken
    /// quietly: a background fetch waiting for its own run is no reader's demand).
    pub(super) fn fetch_chunks(&self, from: u64, to: u64) -> Vec<Fill> {
        self.prefetch(from, to, Fetch::Stream);
        let inflight = lock(&self.cache.inflight);
        (from..to.min(self.chunks()))
            .filter_map(|i| inflight.get(&self.key(i)).cloned())
            .collect()
    }

    /// How reads are judged sequential and read ahead: windows at most as
    /// configured, and small enough that two fit in half the memory tier (read-ahead
    /// never evicts what the reader is about to take).
    fn rules(&self) -> Rules {
        let s = &self.cache.settings;
        let slots = s.memory_bytes / s.chunk_size.max(1) as u64;
        Rules {
            slack: (s.readahead as u64).min(SEQUENTIAL_SLACK),
            share: PROVEN_SHARE,
            max_window: (s.readahead as u64).min(slots / 4),
            chunks: self.chunks(),
        }
    }

    pub fn chunk_count(&self) -> u64 {
        self.chunks()
    }

    pub fn chunk_future(&self, index: u64) -> Fill {
        self.cache
            .chunk(&self.inner, self.key(index), self.chunk_len(index))
    }

    /// Note a read of chunks `first..=last` for the profile.
    fn record(&self, first: u64, last: u64) {
        if !self.first_seen.swap(true, Ordering::Relaxed) {
            self.first_read.notify_one();
        }
        lock(&self.recorder)
            .get_or_insert_with(|| Recorder::new(self.chunks()))
            .read(first, last);
    }
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        self.cache.hold(&self.content, -1);
        // A profile task still waiting for a first read ends.
        self.first_read.notify_one();
    }
}

/// Run `f` after `after` on the current runtime.
fn spawn_later(after: Duration, f: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        f.await
    });
}

/// An image's profile, from its first read on: load it and prefetch by it; where
/// there is none, record the reads of the first `record_secs` and publish them
/// (unless another worker was first).
async fn profile_task(
    store: std::sync::Weak<CachedStore>,
    profiles: Arc<dyn ProfileStore>,
    first_read: Arc<Notify>,
) {
    first_read.notified().await;
    // Woken by the store's drop (a scan's rebuilt LUN table drops the stores it did
    // not keep): nothing to load.
    if store
        .upgrade()
        .is_none_or(|s| !s.first_seen.load(Ordering::Relaxed))
    {
        return;
    }
    let name = profiles.name();
    let loaded = profiles.load().await;
    let Some(s) = store.upgrade() else {
        return;
    };
    let (size, cs) = (s.size, s.cache.settings.chunk_size as u64);
    let max = s.cache.settings.profiles.max_bytes;
    match loaded {
        Ok(Some(bytes)) => {
            s.recording.store(false, Ordering::Relaxed);
            lock(&s.recorder).take();
            match Profile::parse(&bytes, &s.content, size, max) {
                Ok(p) => {
                    let order = p.chunks(cs);
                    s.cache.stats.profiles_used.fetch_add(1, Ordering::Relaxed);
                    info!(profile = %name, chunks = order.len(), bytes = p.bytes(), "boot profile found: prefetching by it");
                    s.guided.store(true, Ordering::Relaxed);
                    let secs = s.cache.settings.profiles.record_secs;
                    drop(s);
                    let unguide = store.clone();
                    spawn_later(Duration::from_secs(secs), async move {
                        if let Some(s) = unguide.upgrade() {
                            s.guided.store(false, Ordering::Relaxed);
                        }
                    });
                    background::prefetch(store, order, background::RUN_BYTES, "boot profile").await;
                }
                Err(e) => {
                    s.cache
                        .stats
                        .profiles_ignored
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(profile = %name, error = %e, "boot profile ignored (`s3lun profile drop` removes it)");
                }
            }
            return;
        }
        Ok(None) => {}
        Err(e) => warn!(profile = %name, error = %e, "boot profile unreadable: recording one"),
    }
    let secs = s.cache.settings.profiles.record_secs;
    drop(s);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let Some(s) = store.upgrade() else {
        return;
    };
    s.recording.store(false, Ordering::Relaxed);
    let Some(rec) = lock(&s.recorder).take().filter(|r| !r.is_empty()) else {
        return;
    };
    let profile = rec.profile(&s.content, size, cs, secs);
    drop(s);
    match profiles.publish(profile.encode()).await {
        Ok(true) => {
            info!(profile = %name, extents = profile.extents.len(), bytes = profile.bytes(), "boot profile published");
        }
        Ok(false) => info!(profile = %name, "boot profile: another worker published first"),
        Err(e) => warn!(profile = %name, error = %e, "boot profile not published"),
    }
}

/// Cut `offset..offset + len` out of consecutive chunks starting at chunk `first`.
fn assemble(chunks: &[Bytes], first: u64, chunk_size: u64, offset: u64, len: usize) -> Bytes {
    let start = (offset - first * chunk_size) as usize;
    if chunks.len() == 1 {
        return chunks[0].slice(start..start + len);
    }
    let mut out = BytesMut::with_capacity(len);
    let mut skip = start;
    for c in chunks {
        let take = (c.len() - skip).min(len - out.len());
        out.extend_from_slice(&c[skip..skip + take]);
        skip = 0;
    }
    out.freeze()
}

impl BlockStore for CachedStore {
    fn size(&self) -> u64 {
        self.size
    }

    fn status(&self) -> StoreStatus {
        let chunks = self.chunks();
        StoreStatus {
            content_key: Some(self.content.to_string()),
            cached: Some((self.cache.present(&self.content, chunks), chunks)),
            health: self.inner.status().health,
        }
    }

    fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
        if len == 0 {
            return ReadFuture::Ready(Ok(Bytes::new()));
        }
        let cs = self.cache.settings.chunk_size as u64;
        let first = offset / cs;
        let last = (offset + len as u64 - 1) / cs;
        if self.recording.load(Ordering::Relaxed) {
            self.record(first, last);
        }
        // Read-ahead only for a stream that proved sequential, by a share of it, and
        // not while a boot profile says what comes next.
        let ahead = lock(&self.streams)
            .read(first, last, &self.rules())
            .filter(|_| !self.guided.load(Ordering::Relaxed));
        let mut hit = Vec::with_capacity((last - first + 1) as usize);
        for i in first..=last {
            match self.cache.mem_get(&self.key(i)) {
                Some(b) => hit.push(b),
                None => break,
            }
        }
        if hit.len() as u64 == last - first + 1 {
            self.cache
                .stats
                .memory_hits
                .fetch_add(hit.len() as u64, Ordering::Relaxed);
            if let Some((from, to)) = ahead {
                self.prefetch(from, to, Fetch::Stream);
            }
            return ReadFuture::Ready(Ok(assemble(&hit, first, cs, offset, len)));
        }
        // What the read will wait for, for the timeline (benches/site.sh): chunks
        // already on their way (another read's or a background fetch), and the
        // rest (fetched for it, or read from disk).
        let timeline = tracing::enabled!(target: "s3lun::timeline", tracing::Level::DEBUG);
        let joined = if timeline {
            let inflight = lock(&self.cache.inflight);
            (first..=last)
                .filter(|i| inflight.contains_key(&self.key(*i)))
                .count()
        } else {
            0
        };
        // Demand first: the read's missing chunks, as one GET within the store's
        // deadline, before read-ahead (which follows only a proven sequential
        // reader) asks for more.
        self.prefetch(first, last + 1, Fetch::Whole);
        if let Some((from, to)) = ahead {
            self.prefetch(from, to, Fetch::Stream);
        }
        let fills: Vec<Fill> = (first..=last).map(|i| self.chunk_future(i)).collect();
        let started = timeline.then(std::time::Instant::now);
        ReadFuture::Pending(Box::pin(async move {
            let chunks = futures::future::try_join_all(fills).await?;
            if let Some(t) = started {
                tracing::debug!(target: "s3lun::timeline", offset, len, chunks = last - first + 1,
                    joined, waited_us = t.elapsed().as_micros() as u64, "miss");
            }
            Ok(assemble(&chunks, first, cs, offset, len))
        }))
    }
}
