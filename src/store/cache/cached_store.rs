//! An image read through the cache: reads cut into chunks, answered at once when
//! every chunk is in memory; a miss fetched at once as one GET of the read's missing
//! chunks, ahead of any background work; read-ahead only for a reader that proved
//! sequential, by a fraction of what it proved; background prefetch by a boot profile
//! (and of whole images where configured); and the recording of this image's profile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::background::{self, Budget};
use super::chunk::ChunkKey;
use super::flight::Fill;
use super::profile::{Profile, ProfileStore, Recorder};
use super::{lock, ChunkCache};
use crate::store::{BlockStore, ReadFuture, StoreStatus};

/// How far (in chunks) a read may land from where the last one ended and still count
/// as sequential: an initiator keeps several reads in flight, which arrive out of order.
const SEQUENTIAL_SLACK: u64 = 8;
/// Read-ahead is this fraction of the run a reader has proved sequential: a file's
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
    /// One past the last chunk read, to spot sequential readers.
    next_expected: AtomicU64,
    /// One past the last chunk read-ahead has asked for.
    frontier: AtomicU64,
    /// Chunks read in sequence so far (read-ahead is a share of it).
    streak: AtomicU64,
    /// Background fetching of this image.
    pub(super) budget: Arc<Budget>,
    profiles: Option<Arc<dyn ProfileStore>>,
    /// Reads are being recorded for this image's profile.
    recording: AtomicBool,
    recorder: Mutex<Option<Recorder>>,
    first_read: Notify,
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
            next_expected: AtomicU64::new(u64::MAX),
            frontier: AtomicU64::new(0),
            streak: AtomicU64::new(0),
            budget,
            profiles: None,
            recording: AtomicBool::new(false),
            recorder: Mutex::new(None),
            first_read: Notify::new(),
            first_seen: AtomicBool::new(false),
        }
    }

    /// A store through the cache that, where configured, prefetches the image whole
    /// or by its published boot profile, and records and publishes its profile when
    /// there is none yet.
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
        if s.size <= s.cache.settings.background.whole_image_max {
            // The last chunk first: filesystems keep metadata at the end (squashfs's
            // tables, GPT's backup header), which a mount reads before any file.
            let n = s.chunks();
            let order = std::iter::once(n - 1).chain(0..n - 1).collect();
            runtime.spawn(background::prefetch(
                Arc::downgrade(&s),
                order,
                "whole image",
            ));
        }
        if let Some(p) = &s.profiles {
            runtime.spawn(profile_task(Arc::downgrade(&s), Arc::clone(p)));
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
    fn prefetch(&self, from: u64, to: u64) {
        let keys = (from..to.min(self.chunks()))
            .map(|i| (self.key(i), self.chunk_len(i)))
            .collect();
        let offset = from * self.cache.settings.chunk_size as u64;
        self.cache.fetch_runs(&self.inner, keys, offset);
    }

    /// [`Self::prefetch`], and the futures of the chunks on their way (taken
    /// quietly: a background fetch waiting for its own run is no reader's demand).
    pub(super) fn fetch_chunks(&self, from: u64, to: u64) -> Vec<Fill> {
        self.prefetch(from, to);
        let inflight = lock(&self.cache.inflight);
        (from..to.min(self.chunks()))
            .filter_map(|i| inflight.get(&self.key(i)).cloned())
            .collect()
    }

    /// Chunks a reader that has read `streak` chunks in sequence is read ahead by: a
    /// share of what it proved, at most as configured, and small enough that two
    /// windows fit in half the memory tier (read-ahead never evicts what the reader
    /// is about to take).
    fn window(&self, streak: u64) -> u64 {
        let s = &self.cache.settings;
        let slots = s.memory_bytes / s.chunk_size.max(1) as u64;
        (streak / PROVEN_SHARE)
            .min(s.readahead as u64)
            .min(slots / 4)
    }

    /// Read-ahead for a sequential reader now at chunk `last`: once it is within half
    /// a window of what was asked for, the next whole window, as one GET (so a reader
    /// costs a GET per window, and at most a window and a half is ahead of it).
    fn read_ahead(&self, last: u64, window: u64) {
        let frontier = self.frontier.load(Ordering::Relaxed).max(last + 1);
        if window == 0 || frontier - last > window.div_ceil(2) || frontier >= self.chunks() {
            return;
        }
        let to = (frontier + window).min(self.chunks());
        if self.frontier.fetch_max(to, Ordering::Relaxed) >= to {
            return; // another reader moved it already
        }
        self.prefetch(frontier, to);
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
    }
}

/// An image's profile: load it and prefetch by it; where there is none, record the
/// reads of the first `record_secs` after the first read and publish them (unless
/// another worker was first).
async fn profile_task(store: std::sync::Weak<CachedStore>, profiles: Arc<dyn ProfileStore>) {
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
                    drop(s);
                    background::prefetch(store, order, "boot profile").await;
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
    let (wake, secs) = (Arc::clone(&s), s.cache.settings.profiles.record_secs);
    drop(s);
    wake.first_read.notified().await;
    drop(wake);
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
        // A reader that continues near where it stopped is sequential (parallel
        // requests of one reader arrive a little out of order); its streak grows by
        // what it read. Any other read starts a new streak, and the frontier with it.
        let prev = self.next_expected.swap(last + 1, Ordering::Relaxed);
        let slack = (self.cache.settings.readahead as u64).min(SEQUENTIAL_SLACK);
        let sequential = prev != u64::MAX && first + slack >= prev && first <= prev + slack;
        let streak = if sequential {
            let grown = (last + 1).saturating_sub(prev);
            self.streak.fetch_add(grown, Ordering::Relaxed) + grown
        } else {
            self.streak.store(last - first + 1, Ordering::Relaxed);
            self.frontier.store(last + 1, Ordering::Relaxed);
            last - first + 1
        };
        let window = self.window(streak);
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
            self.read_ahead(last, window);
            return ReadFuture::Ready(Ok(assemble(&hit, first, cs, offset, len)));
        }
        // Demand first: the read's missing chunks, as one GET, before read-ahead
        // (which follows only a proven sequential reader) asks for more.
        self.prefetch(first, last + 1);
        self.read_ahead(last, window);
        let fills: Vec<Fill> = (first..=last).map(|i| self.chunk_future(i)).collect();
        ReadFuture::Pending(Box::pin(async move {
            let chunks = futures::future::try_join_all(fills).await?;
            Ok(assemble(&chunks, first, cs, offset, len))
        }))
    }
}
