//! The block cache in front of S3: fixed-size chunks keyed by (content key, chunk
//! index), an in-memory LRU tier over a persistent on-disk tier of memory-mapped chunk
//! files (the directory itself is the index, rebuilt by a scan at start).
//!
//! Never serve wrong bytes: each chunk file carries its length and a CRC32C checked
//! on every read from disk (a bad chunk is deleted and fetched again), and becomes
//! visible only by an atomic rename once completely written, so a crash mid-fill
//! leaves at worst a stray temp file, removed at the next start. The key is the
//! content, not the path, so the cache survives restarts and renames, and two LUNs
//! with the same content share it. Concurrent misses on one chunk make one fetch
//! (single-flight); sequential reads trigger read-ahead. If the disk tier fails (full,
//! unwritable), it is switched off with a log line and reads go on from S3.

use std::collections::HashMap;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lru::LruCache;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::{BlockStore, ReadFuture, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Directory of the persistent tier; `None` keeps only the memory tier.
    pub dir: Option<PathBuf>,
    /// Size bound of the persistent tier.
    pub max_disk_bytes: u64,
    /// Size bound of the memory tier.
    pub memory_bytes: u64,
    pub chunk_size: usize,
    /// Chunks fetched ahead of a sequential reader.
    pub readahead: usize,
    /// Largest single GET: read-ahead fetches a run of missing chunks in one request
    /// up to this size, since per-request latency dominates object stores.
    pub max_fetch: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            dir: None,
            max_disk_bytes: 64 << 30,
            memory_bytes: 1 << 30,
            chunk_size: 4 << 20,
            readahead: 16,
            max_fetch: 128 << 20,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChunkKey {
    content: Arc<str>,
    index: u64,
}

const MAGIC: &[u8; 4] = b"S3LC";
const HEADER: usize = 24;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, even if a panic unwinds.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Directory name for a content key: a hash, since keys may hold any characters.
fn key_dir(content: &str) -> String {
    hex::encode(&Sha256::digest(content.as_bytes())[..16])
}

fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + data.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&[1, 0, 0, 0]);
    v.extend_from_slice(&(data.len() as u64).to_le_bytes());
    v.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    v.extend_from_slice(&[0u8; 4]);
    v.extend_from_slice(data);
    v
}

/// Map a chunk file. Files are never modified in place (written aside, renamed in,
/// unlinked on eviction), so the mapping stays valid while in use.
fn map_chunk(path: &Path) -> Option<Bytes> {
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: read-only mapping of a file nobody truncates (see above).
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    decode_chunk(Bytes::from_owner(map))
}

/// The chunk's bytes if the file is whole and its CRC matches.
fn decode_chunk(raw: Bytes) -> Option<Bytes> {
    if raw.len() < HEADER || &raw[..4] != MAGIC || raw[4] != 1 {
        return None;
    }
    let len = u64::from_le_bytes(raw[8..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(raw[16..20].try_into().ok()?);
    if raw.len() != HEADER + len {
        return None;
    }
    let data = raw.slice(HEADER..);
    (crc32c::crc32c(&data) == crc).then_some(data)
}

#[derive(Debug, Default)]
struct DiskIndex {
    /// Relative path -> (size, last use tick).
    entries: HashMap<PathBuf, (u64, u64)>,
    total: u64,
    tick: u64,
}

#[derive(Debug)]
struct DiskTier {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<DiskIndex>,
    disabled: AtomicBool,
}

impl DiskTier {
    fn open(root: &Path, max_bytes: u64) -> std::io::Result<DiskTier> {
        std::fs::create_dir_all(root)?;
        let mut index = DiskIndex::default();
        let mut found: Vec<(PathBuf, u64, std::time::SystemTime)> = Vec::new();
        for d in std::fs::read_dir(root)? {
            let d = d?;
            if !d.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().to_string();
                if name.starts_with(".tmp") {
                    // A fill interrupted by a crash: never visible, now removed.
                    let _ = std::fs::remove_file(f.path());
                    continue;
                }
                if !name.ends_with(".chunk") {
                    continue;
                }
                let meta = f.metadata()?;
                let rel = f
                    .path()
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                found.push((
                    rel,
                    meta.len(),
                    meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                ));
            }
        }
        // Oldest first, so eviction after a restart still prefers stale chunks.
        found.sort_by_key(|(_, _, t)| *t);
        for (rel, size, _) in found {
            index.tick += 1;
            index.total += size;
            index.entries.insert(rel, (size, index.tick));
        }
        info!(dir = %root.display(), chunks = index.entries.len(), bytes = index.total, "cache opened");
        Ok(DiskTier {
            root: root.to_path_buf(),
            max_bytes,
            index: Mutex::new(index),
            disabled: AtomicBool::new(false),
        })
    }

    fn rel(key: &ChunkKey) -> PathBuf {
        PathBuf::from(key_dir(&key.content)).join(format!("{:016x}.chunk", key.index))
    }

    fn disable(&self, what: &str, e: &std::io::Error) {
        if !self.disabled.swap(true, Ordering::Relaxed) {
            warn!(dir = %self.root.display(), error = %e, "cache {what} failed: disk tier off, serving from S3 without caching");
        }
    }

    /// Whether the index lists the chunk (no I/O).
    fn contains(&self, key: &ChunkKey) -> bool {
        !self.disabled.load(Ordering::Relaxed)
            && lock(&self.index).entries.contains_key(&Self::rel(key))
    }

    /// Read and verify one chunk (blocking I/O).
    fn read(&self, key: &ChunkKey, stats: &CacheStats) -> Option<Bytes> {
        if self.disabled.load(Ordering::Relaxed) {
            return None;
        }
        let rel = Self::rel(key);
        {
            let mut idx = lock(&self.index);
            idx.tick += 1;
            let tick = idx.tick;
            match idx.entries.get_mut(&rel) {
                Some(e) => e.1 = tick,
                None => return None,
            }
        }
        let path = self.root.join(&rel);
        let data = map_chunk(&path);
        if data.is_none() {
            stats.corrupt.fetch_add(1, Ordering::Relaxed);
            warn!(chunk = %path.display(), "cache chunk failed its check: dropped, fetching again");
            let _ = std::fs::remove_file(&path);
            let mut idx = lock(&self.index);
            if let Some((size, _)) = idx.entries.remove(&rel) {
                idx.total -= size;
            }
        }
        data
    }

    /// Write one chunk: temp file, then rename (blocking I/O).
    fn write(&self, key: &ChunkKey, data: &[u8], stats: &CacheStats) {
        if self.disabled.load(Ordering::Relaxed) {
            return;
        }
        let rel = Self::rel(key);
        let dir = self.root.join(key_dir(&key.content));
        let result = (|| -> std::io::Result<u64> {
            std::fs::create_dir_all(&dir)?;
            let keyfile = dir.join("key");
            if !keyfile.exists() {
                std::fs::write(&keyfile, key.content.as_bytes())?;
            }
            let bytes = encode_chunk(data);
            let mut rnd = [0u8; 8];
            let _ = getrandom::getrandom(&mut rnd);
            let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
            let mut f = std::fs::File::create(&tmp)?;
            if let Err(e) = f.write_all(&bytes) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            drop(f);
            std::fs::rename(&tmp, self.root.join(&rel))?;
            Ok(bytes.len() as u64)
        })();
        let size = match result {
            Ok(s) => s,
            Err(e) => return self.disable("write", &e),
        };
        let mut evict = Vec::new();
        {
            let mut idx = lock(&self.index);
            idx.tick += 1;
            let tick = idx.tick;
            if let Some((old, _)) = idx.entries.insert(rel.clone(), (size, tick)) {
                idx.total -= old;
            }
            idx.total += size;
            while idx.total > self.max_bytes && idx.entries.len() > 1 {
                let Some(victim) = idx
                    .entries
                    .iter()
                    .filter(|(p, _)| **p != rel)
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(p, _)| p.clone())
                else {
                    break;
                };
                if let Some((s, _)) = idx.entries.remove(&victim) {
                    idx.total -= s;
                }
                evict.push(victim);
            }
        }
        for v in evict {
            stats.evictions.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(self.root.join(v));
        }
    }
}

type Fill = Shared<BoxFuture<'static, Result<Bytes, StoreError>>>;

/// One cache shared by every LUN of a target.
pub struct ChunkCache {
    pub settings: CacheSettings,
    mem: Mutex<LruCache<ChunkKey, Bytes>>,
    disk: Option<DiskTier>,
    inflight: Mutex<HashMap<ChunkKey, Fill>>,
    pub stats: CacheStats,
    to_disk: OnceLock<Sender<(ChunkKey, Bytes)>>,
    writing: Mutex<Writing>,
}

/// Chunks handed to the disk writer thread and not yet on disk. A chunk the memory
/// tier has already evicted is still found here, never fetched twice. At most the
/// memory tier's size (or two read-ahead fetches) waits; beyond, a chunk stays
/// memory-only.
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
    pub fn new(settings: CacheSettings) -> Arc<ChunkCache> {
        let slots = (settings.memory_bytes / settings.chunk_size.max(1) as u64).max(1) as usize;
        let disk = settings.dir.as_ref().and_then(|d| match DiskTier::open(d, settings.max_disk_bytes) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(dir = %d.display(), error = %e, "cache directory unusable: memory tier only");
                None
            }
        });
        let has_disk = disk.is_some();
        let cache = Arc::new(ChunkCache {
            mem: Mutex::new(LruCache::new(
                NonZeroUsize::new(slots).unwrap_or(NonZeroUsize::MIN),
            )),
            disk,
            inflight: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
            settings,
            to_disk: OnceLock::new(),
            writing: Mutex::default(),
        });
        if has_disk {
            let (tx, rx) = std::sync::mpsc::channel();
            let weak = Arc::downgrade(&cache);
            let spawned = std::thread::Builder::new()
                .name("s3lun-cache-writer".into())
                .spawn(move || disk_writer(weak, rx));
            match spawned {
                Ok(_) => {
                    let _ = cache.to_disk.set(tx);
                }
                Err(e) => warn!(error = %e, "no cache writer thread: memory tier only"),
            }
        }
        cache
    }

    fn mem_get(&self, key: &ChunkKey) -> Option<Bytes> {
        if let Some(b) = lock(&self.mem).get(key) {
            return Some(b.clone());
        }
        lock(&self.writing).chunks.get(key).cloned()
    }

    /// One chunk, from memory, disk, or `inner` (single-flight).
    fn chunk(self: &Arc<Self>, inner: &Arc<dyn BlockStore>, key: ChunkKey, len: usize) -> Fill {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&key) {
            return f.clone();
        }
        let cache = Arc::clone(self);
        let inner = Arc::clone(inner);
        let k = key.clone();
        let fill: Fill = async move {
            let r = cache.fill(&inner, &k, len).await;
            lock(&cache.inflight).remove(&k);
            r
        }
        .boxed()
        .shared();
        inflight.insert(key, fill.clone());
        fill
    }

    async fn fill(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        key: &ChunkKey,
        len: usize,
    ) -> Result<Bytes, StoreError> {
        if let Some(b) = self.mem_get(key) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        if self.disk.is_some() {
            let cache = Arc::clone(self);
            let k = key.clone();
            let found = tokio::task::spawn_blocking(move || {
                cache.disk.as_ref().and_then(|d| d.read(&k, &cache.stats))
            })
            .await
            .ok()
            .flatten();
            if let Some(b) = found.filter(|b| b.len() == len) {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                lock(&self.mem).put(key.clone(), b.clone());
                return Ok(b);
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let offset = key.index * self.settings.chunk_size as u64;
        let data = inner.read_at(offset, len).wait().await?;
        self.stats
            .fetched_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.keep(key, &data);
        Ok(data)
    }

    /// A fetched chunk goes to memory at once and to disk in the background, on one
    /// low-priority thread: the reader waiting for it never waits for the file, and
    /// writing a cold image does not take the cores that serve it.
    fn keep(&self, key: &ChunkKey, data: &Bytes) {
        lock(&self.mem).put(key.clone(), data.clone());
        let Some(tx) = self.to_disk.get() else {
            return;
        };
        let bound = self
            .settings
            .memory_bytes
            .max(2 * self.settings.max_fetch as u64);
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

    /// Wait until every chunk handed to the disk writer is written (or failed).
    pub fn flush(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !lock(&self.writing).chunks.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Start fetching the chunks `keys` (consecutive, starting at byte `offset`) that
    /// are nowhere yet (not in memory, on disk or in flight), with one GET per run of
    /// at most `max_fetch` bytes; each chunk is single-flight like any other. Needs a
    /// tokio runtime: the fetches run as tasks of their own.
    fn fetch_runs(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        keys: Vec<(ChunkKey, usize)>,
        mut offset: u64,
    ) {
        let mut inflight = lock(&self.inflight);
        let mut run: Vec<(ChunkKey, usize)> = Vec::new();
        let (mut run_start, mut run_len) = (offset, 0);
        for (key, len) in keys {
            let absent = !inflight.contains_key(&key)
                && self.mem_get(&key).is_none()
                && !self.disk.as_ref().is_some_and(|d| d.contains(&key));
            if !absent || run_len + len > self.settings.max_fetch.max(len) {
                self.start_run(inner, std::mem::take(&mut run), run_start, &mut inflight);
                run_len = 0;
            }
            if absent {
                if run.is_empty() {
                    run_start = offset;
                }
                run.push((key, len));
                run_len += len;
            }
            offset += len as u64;
        }
        self.start_run(inner, run, run_start, &mut inflight);
    }

    fn start_run(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        run: Vec<(ChunkKey, usize)>,
        offset: u64,
        inflight: &mut HashMap<ChunkKey, Fill>,
    ) {
        if run.is_empty() {
            return;
        }
        let mut senders = Vec::with_capacity(run.len());
        for (key, _) in &run {
            let (tx, rx) = tokio::sync::oneshot::channel::<Result<Bytes, StoreError>>();
            senders.push(Some(tx));
            let (cache, k) = (Arc::clone(self), key.clone());
            let fill: Fill = async move {
                let r = rx.await.unwrap_or_else(|_| {
                    Err(StoreError::Unavailable("read-ahead abandoned".into()))
                });
                lock(&cache.inflight).remove(&k);
                r
            }
            .boxed()
            .shared();
            inflight.insert(key.clone(), fill.clone());
            // Polled once by itself, so the in-flight entry goes whoever reads it.
            tokio::spawn(fill);
        }
        let (cache, inner) = (Arc::clone(self), Arc::clone(inner));
        tokio::spawn(async move { cache.fetch_run(inner, run, offset, senders).await });
    }

    /// Fetch a run of chunks with one streamed GET, handing each chunk over as soon
    /// as its last byte arrives; what the stream fails to deliver is fetched chunk by
    /// chunk (with the store's retries).
    async fn fetch_run(
        self: Arc<Self>,
        inner: Arc<dyn BlockStore>,
        run: Vec<(ChunkKey, usize)>,
        offset: u64,
        mut senders: Vec<Option<RunSender>>,
    ) {
        let total: usize = run.iter().map(|(_, l)| l).sum();
        self.stats
            .misses
            .fetch_add(run.len() as u64, Ordering::Relaxed);
        let mut done = 0;
        if let Some(open) = inner.read_stream(offset, total) {
            if let Ok(mut body) = open.await {
                let mut buf = BytesMut::with_capacity(run[0].1);
                'body: while done < run.len() {
                    let Ok(Some(Ok(mut piece))) =
                        tokio::time::timeout(STREAM_STALL, body.next()).await
                    else {
                        break;
                    };
                    while !piece.is_empty() {
                        let want = run[done].1 - buf.len();
                        buf.extend_from_slice(&piece.split_to(want.min(piece.len())));
                        if buf.len() == run[done].1 {
                            let data = buf.split().freeze();
                            self.deliver(&run[done].0, Ok(data), &mut senders[done]);
                            done += 1;
                            if done == run.len() {
                                break 'body;
                            }
                            buf.reserve(run[done].1);
                        }
                    }
                }
            }
        }
        // What the stream did not deliver: one GET per chunk, all at once (the store
        // bounds how many run), each handed over as it completes.
        let mut at = offset;
        let mut rest = FuturesUnordered::new();
        for (i, (_, len)) in run.iter().enumerate() {
            if i >= done {
                let (inner, start, len) = (Arc::clone(&inner), at, *len);
                rest.push(async move { (i, inner.read_at(start, len).wait().await) });
            }
            at += *len as u64;
        }
        while let Some((i, r)) = rest.next().await {
            self.deliver(&run[i].0, r, &mut senders[i]);
        }
    }

    fn deliver(&self, key: &ChunkKey, r: Result<Bytes, StoreError>, to: &mut Option<RunSender>) {
        if let Ok(d) = &r {
            self.stats
                .fetched_bytes
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            self.keep(key, d);
        }
        if let Some(tx) = to.take() {
            let _ = tx.send(r);
        }
    }

    /// Check every chunk on disk; returns (good, bad) counts; bad ones are removed.
    pub fn verify(&self) -> (u64, u64) {
        let Some(disk) = &self.disk else {
            return (0, 0);
        };
        let paths: Vec<PathBuf> = lock(&disk.index).entries.keys().cloned().collect();
        let (mut good, mut bad) = (0, 0);
        for rel in paths {
            let p = disk.root.join(&rel);
            if map_chunk(&p).is_some() {
                good += 1;
            } else {
                bad += 1;
                let _ = std::fs::remove_file(&p);
                let mut idx = lock(&disk.index);
                if let Some((s, _)) = idx.entries.remove(&rel) {
                    idx.total -= s;
                }
            }
        }
        (good, bad)
    }

    /// (chunks, bytes) on disk.
    pub fn disk_usage(&self) -> (usize, u64) {
        self.disk.as_ref().map_or((0, 0), |d| {
            let idx = lock(&d.index);
            (idx.entries.len(), idx.total)
        })
    }

    pub fn disk_enabled(&self) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| !d.disabled.load(Ordering::Relaxed))
    }
}

/// How far (in chunks) a read may land from where the last one ended and still count
/// as sequential: an initiator keeps several reads in flight, which arrive out of order.
const SEQUENTIAL_SLACK: u64 = 8;

type RunSender = tokio::sync::oneshot::Sender<Result<Bytes, StoreError>>;

/// A streamed read-ahead that delivers nothing for this long falls back to
/// per-chunk GETs, which have their own deadline.
const STREAM_STALL: std::time::Duration = std::time::Duration::from_secs(20);

/// The disk writer thread: writes what `keep` hands it until the cache is dropped.
fn disk_writer(cache: std::sync::Weak<ChunkCache>, rx: Receiver<(ChunkKey, Bytes)>) {
    // SAFETY: plain syscalls on this thread's own id and priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
    while let Ok((key, data)) = rx.recv() {
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if let Some(disk) = &cache.disk {
            disk.write(&key, &data, &cache.stats);
        }
        let mut w = lock(&cache.writing);
        if w.chunks.remove(&key).is_some() {
            w.bytes -= data.len() as u64;
        }
    }
}

/// A store read through the cache.
#[derive(Debug)]
pub struct CachedStore {
    inner: Arc<dyn BlockStore>,
    content: Arc<str>,
    cache: Arc<ChunkCache>,
    size: u64,
    /// One past the last chunk read, to spot sequential readers.
    next_expected: AtomicU64,
    /// One past the last chunk read-ahead has asked for.
    frontier: AtomicU64,
}

impl CachedStore {
    pub fn new(
        inner: Arc<dyn BlockStore>,
        content_key: &str,
        cache: Arc<ChunkCache>,
    ) -> CachedStore {
        CachedStore {
            size: inner.size(),
            inner,
            content: Arc::from(content_key),
            cache,
            next_expected: AtomicU64::new(u64::MAX),
            frontier: AtomicU64::new(0),
        }
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

    /// Start fetching the chunks `from..to` that are nowhere yet, in as few GETs as
    /// the fetch size allows (read-ahead; in a tokio runtime).
    fn prefetch(&self, from: u64, to: u64) {
        let keys = (from..to.min(self.chunks()))
            .map(|i| (self.key(i), self.chunk_len(i)))
            .collect();
        let offset = from * self.cache.settings.chunk_size as u64;
        self.cache.fetch_runs(&self.inner, keys, offset);
    }

    /// Chunks per read-ahead window: as configured, but small enough that two windows
    /// ahead of a reader fit in half the memory tier, so read-ahead never evicts what
    /// the reader is about to take.
    fn window(&self) -> u64 {
        let s = &self.cache.settings;
        let slots = s.memory_bytes / s.chunk_size.max(1) as u64;
        (s.readahead as u64).min(slots / 4)
    }

    /// Where a read-ahead window ending at `to` should end: at the image's end when
    /// less than half a window would be left, as a request costs more than its bytes.
    fn window_end(&self, to: u64) -> u64 {
        let n = self.chunks();
        let half = self.window().div_ceil(2);
        if n.saturating_sub(to) < half {
            n
        } else {
            to
        }
    }

    /// Read-ahead for a sequential reader now at chunk `last`: a whole window at a
    /// time, once the reader is within half a window of what was asked for, so each
    /// window is one large GET rather than one GET per chunk.
    fn read_ahead(&self, last: u64) {
        let window = self.window();
        let frontier = self.frontier.load(Ordering::Relaxed).max(last + 1);
        if frontier - last > window || frontier >= self.chunks() {
            return;
        }
        let to = self.window_end(frontier + window);
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

    fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
        if len == 0 {
            return ReadFuture::Ready(Ok(Bytes::new()));
        }
        let cs = self.cache.settings.chunk_size as u64;
        let first = offset / cs;
        let last = (offset + len as u64 - 1) / cs;
        // A reader that continues near where it stopped is sequential: fetch ahead of
        // it. (Parallel requests of one sequential reader arrive a little out of order.)
        let prev = self.next_expected.swap(last + 1, Ordering::Relaxed);
        let window = self.window();
        let slack = window.min(SEQUENTIAL_SLACK);
        let sequential = prev != u64::MAX && first + slack >= prev && first <= prev + slack;
        // Read-ahead runs as tasks: not where there is no runtime (benches, tools).
        let can_fetch_ahead = || window > 0 && tokio::runtime::Handle::try_current().is_ok();
        if sequential && can_fetch_ahead() {
            self.read_ahead(last);
        }
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
            return ReadFuture::Ready(Ok(assemble(&hit, first, cs, offset, len)));
        }
        // A miss of a sequential reader (or of the first read) starts a whole window
        // as one streamed GET; the chunks asked for come first in it.
        if (sequential || prev == u64::MAX) && can_fetch_ahead() {
            let to = self.window_end((first + window).max(last + 1));
            self.prefetch(first, to);
            self.frontier.fetch_max(to, Ordering::Relaxed);
        }
        let fills: Vec<Fill> = (first..=last).map(|i| self.chunk_future(i)).collect();
        ReadFuture::Pending(Box::pin(async move {
            let chunks = futures::future::try_join_all(fills).await?;
            Ok(assemble(&chunks, first, cs, offset, len))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalFile;
    use std::sync::atomic::AtomicUsize;

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
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_flight_persistence_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (src, data) = setup(dir.path(), 40_000);
        let inner: Arc<dyn BlockStore> = src.clone();
        let cache = ChunkCache::new(settings(dir.path()));
        let store = Arc::new(CachedStore::new(inner.clone(), "etag-1", cache.clone()));
        // 32 concurrent readers of the same range: one fetch per chunk.
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
            3,
            "chunks 0, 1, 2 once each"
        );
        // A new cache on the same directory (a restart) serves from disk.
        cache.flush();
        drop(store);
        let cache2 = ChunkCache::new(settings(dir.path()));
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
        let cache3 = ChunkCache::new(settings(dir.path()));
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
        let cache = ChunkCache::new(s);
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

    #[test]
    fn chunk_encoding_rejects_damage() {
        let e = encode_chunk(b"hello");
        assert_eq!(&decode_chunk(Bytes::from(e.clone())).unwrap()[..], b"hello");
        assert!(decode_chunk(Bytes::copy_from_slice(&e[..e.len() - 1])).is_none());
        let mut bad = e.clone();
        bad[HEADER] ^= 1;
        assert!(decode_chunk(Bytes::from(bad)).is_none());
        assert!(decode_chunk(Bytes::new()).is_none());
    }
}
