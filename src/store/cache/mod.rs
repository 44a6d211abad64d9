//! The block cache in front of S3 (this module: the memory tier and what ties the
//! parts together; [`chunk`]: key and file format; [`disk`]: the persistent tier and
//! write-behind; [`flight`]: single flight and read-ahead runs; [`cached_store`]: an
//! image read through the cache): fixed-size chunks keyed by (cache namespace, chunk
//! index), an in-memory LRU tier over a persistent on-disk tier of memory-mapped chunk
//! files (the directory itself is the index, rebuilt by a scan at start).
//!
//! Never serve wrong bytes: each chunk file carries its length and a CRC32C checked
//! on every read from disk (a bad chunk is deleted and fetched again), and becomes
//! visible only by an atomic rename once completely written, so a crash mid-fill
//! leaves at worst a stray temp file, removed at the next start. The namespace is the
//! object and what S3 says its bytes are (URL, ETag, version, size: see
//! [`crate::store::key`]), never a claimed md5, so the cache survives restarts, a
//! re-upload starts a new namespace, and no object reads another's chunks. Concurrent misses on one chunk make one fetch
//! (single-flight); sequential reads trigger read-ahead. If the disk tier fails (full,
//! unwritable), it is switched off with a log line and reads go on from S3.

mod background;
mod cached_store;
mod chunk;
mod disk;
mod flight;
mod priority;
pub mod profile;
mod sequential;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

pub use cached_store::CachedStore;
use chunk::ChunkKey;
use disk::DiskTier;
pub use flight::Fill;

/// How long [`ChunkCache::flush`] waits for the write-behind task: a stop must not
/// wait for a slow disk (a chunk not written is fetched again, never served wrong).
const FLUSH_LIMIT: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Directory of the persistent tier; `None` keeps only the memory tier.
    pub dir: Option<PathBuf>,
    /// Size bound of the persistent tier (lowered at open to what the filesystem
    /// has room for).
    pub max_disk_bytes: u64,
    /// Size bound of the memory tier.
    pub memory_bytes: u64,
    pub chunk_size: usize,
    /// Chunks fetched ahead of a sequential reader.
    pub readahead: usize,
    /// Largest single GET: read-ahead fetches a run of missing chunks in one request
    /// up to this size, since per-request latency dominates object stores.
    pub max_fetch: usize,
    /// A reader cuts a stream for a chunk only this far down it or more (priority.rs).
    pub cut_bytes: usize,
    /// What background fetching (profiles, whole images) may take.
    pub background: BackgroundSettings,
    /// Boot profiles: record what the first reads of an image are, publish them, and
    /// prefetch by the profiles others published.
    pub profiles: ProfileSettings,
}

/// The budget of background fetching: demand reads never wait for it, and it never
/// takes more than this from S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundSettings {
    /// Concurrent background GETs of the whole worker.
    pub gets: usize,
    /// Concurrent background GETs of one image.
    pub gets_per_image: usize,
    /// Bytes per second of the whole worker (0: no bound).
    pub bytes_per_sec: u64,
    /// Bytes per second of one image (0: only the worker's bound).
    pub image_bytes_per_sec: u64,
    /// Images up to this size are fetched whole in the background once opened (0: none).
    pub whole_image_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSettings {
    pub enabled: bool,
    /// How long after an image's first read its reads are recorded.
    pub record_secs: u64,
    /// A profile asking for more than this is ignored.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            dir: None,
            max_disk_bytes: 100 << 30,
            memory_bytes: 1 << 30,
            chunk_size: 128 << 10,
            readahead: 256,
            max_fetch: 128 << 20,
            cut_bytes: 1 << 20,
            background: BackgroundSettings::default(),
            profiles: ProfileSettings::default(),
        }
    }
}

impl Default for BackgroundSettings {
    fn default() -> Self {
        BackgroundSettings {
            gets: 8,
            gets_per_image: 4,
            bytes_per_sec: 128 << 20,
            image_bytes_per_sec: 0,
            whole_image_max: 0,
        }
    }
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            enabled: true,
            record_secs: 120,
            max_bytes: 4 << 30,
        }
    }
}

#[derive(Debug, Default)]
pub struct CacheStats {
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub misses: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub evictions: AtomicU64,
    pub corrupt: AtomicU64,
    /// Read-ahead streams cut so that a reader's chunk came first.
    pub demand_cuts: AtomicU64,
    /// Boot profiles found and prefetched by, and found but ignored.
    pub profiles_used: AtomicU64,
    pub profiles_ignored: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, even if a panic unwinds.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bytes of chunks fetched and waiting for the disk writer: an eighth of
/// `memory_bytes` (at least 16 chunks; beyond, a chunk stays memory-only), taken from
/// the memory tier's share so that the two together stay within `memory_bytes` (RSS
/// under a storm: docs/benchmarks.md).
fn writer_bound(s: &CacheSettings) -> u64 {
    (s.memory_bytes / 8).max(16 * s.chunk_size as u64)
}

/// One cache shared by every LUN of a target.
pub struct ChunkCache {
    pub settings: CacheSettings,
    mem: Mutex<LruCache<ChunkKey, Bytes>>,
    disk: Option<DiskTier>,
    inflight: Mutex<HashMap<ChunkKey, Fill>>,
    /// The streamed read-ahead each in-flight chunk belongs to (see priority.rs).
    runs: Mutex<HashMap<ChunkKey, Arc<priority::RunControl>>>,
    pub stats: CacheStats,
    /// The write-behind task's queue; taken by [`ChunkCache::close`], which ends it.
    to_disk: Mutex<Option<UnboundedSender<(ChunkKey, Bytes)>>>,
    writing: Mutex<Writing>,
    /// Signalled when the write-behind task has nothing left.
    written: Condvar,
    runtime: Handle,
    /// The worker's background fetching budget (background.rs).
    budget: Arc<background::Budget>,
}

/// Chunks handed to the write-behind task and not yet on disk. A chunk the memory
/// tier has already evicted is still found here, never fetched twice. At most
/// [`writer_bound`] waits; beyond, a chunk stays memory-only.
#[derive(Debug, Default)]
struct Writing {
    chunks: HashMap<ChunkKey, Bytes>,
    bytes: u64,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("settings", &self.settings)
            .finish()
    }
}

impl ChunkCache {
    /// A cache whose fetches, read-ahead, disk reads and write-behind all run on
    /// `runtime`.
    pub fn new(settings: CacheSettings, runtime: Handle) -> Arc<ChunkCache> {
        // The memory tier and the chunks waiting for the disk share `memory_bytes`.
        let lru_bytes =
            settings.memory_bytes - writer_bound(&settings).min(settings.memory_bytes / 2);
        let slots = (lru_bytes / settings.chunk_size.max(1) as u64).max(1) as usize;
        let disk = settings.dir.as_ref().and_then(|d| match DiskTier::open(d, settings.max_disk_bytes, settings.chunk_size) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(dir = %d.display(), error = %e, "cache directory unusable: memory tier only");
                None
            }
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let has_disk = disk.is_some();
        let budget = Arc::new(background::Budget::new(
            settings.background.gets,
            settings.background.bytes_per_sec,
        ));
        let cache = Arc::new(ChunkCache {
            mem: Mutex::new(LruCache::new(
                NonZeroUsize::new(slots).unwrap_or(NonZeroUsize::MIN),
            )),
            disk,
            inflight: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
            settings,
            to_disk: Mutex::new(has_disk.then_some(tx)),
            writing: Mutex::default(),
            written: Condvar::new(),
            runtime,
            budget,
        });
        if has_disk {
            let weak = Arc::downgrade(&cache);
            cache
                .runtime
                .spawn_blocking(move || disk::write_behind(weak, rx));
        }
        cache
    }

    /// Whether a chunk is in memory or on disk (no I/O).
    fn has(&self, key: &ChunkKey) -> bool {
        lock(&self.mem).contains(key)
            || lock(&self.writing).chunks.contains_key(key)
            || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// A store serving `content` opened (`+1`) or closed (`-1`): the disk tier keeps
    /// the chunks of images being served until nothing else is left to evict.
    fn hold(&self, content: &str, delta: isize) {
        if let Some(d) = &self.disk {
            d.hold(content, delta);
        }
    }

    fn mem_get(&self, key: &ChunkKey) -> Option<Bytes> {
        if let Some(b) = lock(&self.mem).get(key) {
            return Some(b.clone());
        }
        lock(&self.writing).chunks.get(key).cloned()
    }

    /// Drop the cached chunks of one image (its namespace, URL or ETag) or all, from
    /// memory and disk:
    /// the chunks removed from disk, and their bytes. Reads fetch them again.
    pub fn purge(&self, content: Option<&str>) -> (u64, u64) {
        {
            let mut mem = lock(&self.mem);
            let keys: Vec<ChunkKey> = mem
                .iter()
                .map(|(k, _)| k)
                .filter(|k| {
                    content.is_none_or(|c| crate::store::key::namespace_matches(&k.content, c))
                })
                .cloned()
                .collect();
            for k in keys {
                mem.pop(&k);
            }
        }
        self.disk.as_ref().map_or((0, 0), |d| d.purge(content))
    }

    /// How many of the first `chunks` chunks of `content` are cached, in memory or
    /// on disk (for `/status`; no I/O, and no change to what is recently used).
    pub fn present(&self, content: &Arc<str>, chunks: u64) -> u64 {
        (0..chunks)
            .filter(|&index| {
                self.has(&ChunkKey {
                    content: Arc::clone(content),
                    index,
                })
            })
            .count() as u64
    }

    /// A fetched chunk goes to memory at once and to disk behind it, by the
    /// low-priority write-behind task: the reader waiting for it never waits for the
    /// file, and writing a cold image does not take the cores that serve it.
    fn keep(&self, key: &ChunkKey, data: &Bytes) {
        lock(&self.mem).put(key.clone(), data.clone());
        let to_disk = lock(&self.to_disk);
        let Some(tx) = to_disk.as_ref() else {
            return;
        };
        let bound = writer_bound(&self.settings);
        {
            let mut w = lock(&self.writing);
            if w.bytes + data.len() as u64 <= bound && tx.send((key.clone(), data.clone())).is_ok()
            {
                w.bytes += data.len() as u64;
                w.chunks.insert(key.clone(), data.clone());
                return;
            }
        }
        debug!(
            chunk = key.index,
            "cache writer behind: chunk kept in memory only"
        );
    }

    /// The write-behind task is done with `key`.
    fn written(&self, key: &ChunkKey, len: u64) {
        let mut w = lock(&self.writing);
        if w.chunks.remove(key).is_some() {
            w.bytes -= len;
        }
        if w.chunks.is_empty() {
            self.written.notify_all();
        }
    }

    /// Wait until every chunk handed to the write-behind task is written (or has
    /// failed), woken by the task itself; gives up after [`FLUSH_LIMIT`].
    pub fn flush(&self) {
        self.flush_within(FLUSH_LIMIT)
    }

    /// [`Self::flush`], giving up after `limit` (an exit has a fixed time).
    pub fn flush_within(&self, limit: Duration) {
        let w = lock(&self.writing);
        let _ = self
            .written
            .wait_timeout_while(w, limit.min(FLUSH_LIMIT), |w| !w.chunks.is_empty());
    }

    /// End the write-behind task once it has written what it holds: a stopping
    /// process must not wait for every reader of the cache (an abandoned S3 read
    /// holds one) to let go of it before the task's thread can end.
    pub fn close(&self) {
        lock(&self.to_disk).take();
    }

    /// Check every chunk on disk; returns (good, bad) counts; bad ones are removed.
    pub fn verify(&self) -> (u64, u64) {
        self.disk.as_ref().map_or((0, 0), DiskTier::verify)
    }

    /// (chunks, bytes) on disk.
    pub fn disk_usage(&self) -> (usize, u64) {
        self.disk.as_ref().map_or((0, 0), DiskTier::usage)
    }

    pub fn disk_enabled(&self) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| !d.disabled.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::chunk::{key_dir, HEADER};
    use super::*;
    use crate::store::{BlockStore, LocalFile, ReadFuture, StoreError};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// Counts reads, and can be told to fail.
    #[derive(Debug)]
    struct Counting {
        inner: LocalFile,
        reads: AtomicUsize,
        fail: AtomicBool,
    }

    impl BlockStore for Counting {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return ReadFuture::Ready(Err(StoreError::Unavailable("down".into())));
            }
            let r = self.inner.read_at(offset, len);
            ReadFuture::Pending(Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                r.wait().await
            }))
        }
    }

    fn setup(dir: &Path, size: usize) -> (Arc<Counting>, Vec<u8>) {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 3) as u8).collect();
        let p = dir.join("img");
        std::fs::write(&p, &data).unwrap();
        let c = Arc::new(Counting {
            inner: LocalFile::open(&p).unwrap(),
            reads: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        });
        (c, data)
    }

    fn settings(dir: &Path) -> CacheSettings {
        CacheSettings {
            dir: Some(dir.join("cache")),
            max_disk_bytes: 1 << 30,
            memory_bytes: 64 << 10,
            chunk_size: 4096,
            readahead: 0,
            max_fetch: 1 << 20,
            ..CacheSettings::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_flight_persistence_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (src, data) = setup(dir.path(), 40_000);
        let inner: Arc<dyn BlockStore> = src.clone();
        let cache = ChunkCache::new(settings(dir.path()), Handle::current());
        let store = Arc::new(CachedStore::new(inner.clone(), "etag-1", cache.clone()));
        // 32 concurrent readers of the same range: one GET for its three chunks.
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let s = Arc::clone(&store);
            tasks.push(tokio::spawn(
                async move { s.read_at(1000, 10_000).wait().await },
            ));
        }
        for t in tasks {
            assert_eq!(&t.await.unwrap().unwrap()[..], &data[1000..11_000]);
        }
        assert_eq!(
            src.reads.load(Ordering::SeqCst),
            1,
            "chunks 0, 1, 2 in one GET, once"
        );
        // A new cache on the same directory (a restart) serves from disk.
        cache.flush();
        drop(store);
        let cache2 = ChunkCache::new(settings(dir.path()), Handle::current());
        let store2 = CachedStore::new(inner.clone(), "etag-1", cache2.clone());
        src.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            &store2.read_at(4096, 8192).wait().await.unwrap()[..],
            &data[4096..12_288]
        );
        assert_eq!(cache2.stats.disk_hits.load(Ordering::SeqCst), 2);
        // Uncached chunk while the source is down: an error, not wrong bytes.
        assert!(store2.read_at(30_000, 10).wait().await.is_err());
        // Corrupt a chunk on disk: detected, dropped, refetched.
        src.fail.store(false, Ordering::SeqCst);
        let cache3 = ChunkCache::new(settings(dir.path()), Handle::current());
        let chunk = dir
            .path()
            .join("cache")
            .join(key_dir("etag-1"))
            .join(format!("{:016x}.chunk", 0));
        let mut raw = std::fs::read(&chunk).unwrap();
        raw[HEADER + 5] ^= 0xff;
        std::fs::write(&chunk, raw).unwrap();
        let store3 = CachedStore::new(inner.clone(), "etag-1", cache3.clone());
        assert_eq!(
            &store3.read_at(0, 4096).wait().await.unwrap()[..],
            &data[..4096]
        );
        assert_eq!(cache3.stats.corrupt.load(Ordering::SeqCst), 1);
        cache3.flush();
        assert_eq!(cache3.verify(), (3, 0));
        // A different content key never sees these chunks.
        let other = CachedStore::new(inner, "etag-2", cache3.clone());
        let before = src.reads.load(Ordering::SeqCst);
        other.read_at(0, 10).wait().await.unwrap();
        assert_eq!(src.reads.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn interrupted_fill_leaves_nothing_visible_and_eviction_bounds_size() {
        let dir = tempfile::tempdir().unwrap();
        let (src, data) = setup(dir.path(), 64 * 1024);
        let inner: Arc<dyn BlockStore> = src.clone();
        let root = dir.path().join("cache");
        let kd = root.join(key_dir("k"));
        std::fs::create_dir_all(&kd).unwrap();
        std::fs::write(kd.join(".tmp-deadbeef"), b"half a chunk").unwrap();
        let mut s = settings(dir.path());
        s.max_disk_bytes = 3 * (4096 + HEADER as u64);
        let cache = ChunkCache::new(s, Handle::current());
        assert!(!kd.join(".tmp-deadbeef").exists());
        let store = CachedStore::new(inner, "k", cache.clone());
        assert_eq!(
            &store.read_at(0, 64 * 1024).wait().await.unwrap()[..],
            &data[..]
        );
        cache.flush();
        let (n, bytes) = cache.disk_usage();
        assert!(
            n <= 3 && bytes <= 3 * (4096 + HEADER as u64),
            "{n} chunks, {bytes} bytes"
        );
        assert!(cache.stats.evictions.load(Ordering::SeqCst) >= 13);
    }
}
