//! The persistent tier: chunk files under the cache directory (the directory is the
//! index, rebuilt by a scan at start and kept compact in memory), least recently used
//! evicted past the size bound with the chunks of images being served kept until
//! nothing else is left, files written aside and renamed in whole, and the
//! write-behind task that puts fetched chunks there. A tier that fails (disk full, unwritable) switches
//! itself off and reads go on from memory and S3.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};

use bytes::Bytes;
use tracing::{info, warn};

use super::chunk::{encode_chunk, key_dir, map_chunk, ChunkKey};
use super::{lock, CacheStats, ChunkCache};

/// A chunk on disk: its image's directory number and its index. Compact on purpose:
/// a site-sized cache holds close to a million chunks, and the index stays in memory.
type Slot = (u32, u32);

#[derive(Debug, Clone, Copy)]
struct Entry {
    tick: u64,
    size: u32,
}

/// What is on disk, in memory: about 60 bytes per chunk (a hash entry and an LRU
/// entry), so 100 GiB of 128 KiB chunks index in under 64 MiB (tested).
#[derive(Debug, Default)]
pub(super) struct DiskIndex {
    /// Directory number -> directory name (a hash of the content key).
    dirs: Vec<Box<str>>,
    numbers: HashMap<Box<str>, u32>,
    entries: HashMap<Slot, Entry>,
    /// Chunks of images nobody serves now, oldest use first: evicted first.
    free: BTreeMap<u64, Slot>,
    /// Chunks of images being served: evicted only when nothing else is left.
    held: BTreeMap<u64, Slot>,
    /// Directory number -> how many stores serve it.
    users: HashMap<u32, usize>,
    pub(super) total: u64,
    tick: u64,
}

impl DiskIndex {
    fn number(&mut self, dir: &str) -> u32 {
        if let Some(n) = self.numbers.get(dir) {
            return *n;
        }
        let n = self.dirs.len() as u32;
        self.dirs.push(dir.into());
        self.numbers.insert(dir.into(), n);
        n
    }

    fn lru(&mut self, dir: u32) -> &mut BTreeMap<u64, Slot> {
        if self.users.contains_key(&dir) {
            &mut self.held
        } else {
            &mut self.free
        }
    }

    fn contains(&self, slot: Slot) -> bool {
        self.entries.contains_key(&slot)
    }

    /// Mark a chunk used now; false if it is not on disk.
    fn touch(&mut self, slot: Slot) -> bool {
        self.tick += 1;
        let tick = self.tick;
        let Some(e) = self.entries.get_mut(&slot) else {
            return false;
        };
        let old = std::mem::replace(&mut e.tick, tick);
        let lru = self.lru(slot.0);
        lru.remove(&old);
        lru.insert(tick, slot);
        true
    }

    fn insert(&mut self, slot: Slot, size: u64) {
        self.remove(slot);
        self.tick += 1;
        let tick = self.tick;
        self.entries.insert(
            slot,
            Entry {
                tick,
                size: size as u32,
            },
        );
        self.lru(slot.0).insert(tick, slot);
        self.total += size;
    }

    fn remove(&mut self, slot: Slot) -> Option<u64> {
        let e = self.entries.remove(&slot)?;
        self.lru(slot.0).remove(&e.tick);
        self.total -= e.size as u64;
        Some(e.size as u64)
    }

    /// The chunk to evict next, other than `keep`: the least recently used of an
    /// image nobody serves, else (a cache too small for what it serves) of one served.
    fn victim(&self, keep: Slot) -> Option<Slot> {
        let pick = |m: &BTreeMap<u64, Slot>| m.values().find(|s| **s != keep).copied();
        pick(&self.free).or_else(|| pick(&self.held))
    }

    fn path(&self, slot: Slot) -> PathBuf {
        PathBuf::from(&*self.dirs[slot.0 as usize]).join(chunk_name(slot.1 as u64))
    }

    /// A store serving the image in `dir` opened (`+1`) or closed (`-1`): its chunks
    /// move between the LRU lists.
    fn hold(&mut self, dir: &str, delta: isize) {
        let n = self.number(dir);
        let users = self.users.get(&n).copied().unwrap_or(0);
        let now = users.saturating_add_signed(delta);
        let moved = (users == 0) != (now == 0);
        let (from, to) = if now > 0 {
            self.users.insert(n, now);
            (&mut self.free, &mut self.held)
        } else {
            self.users.remove(&n);
            (&mut self.held, &mut self.free)
        };
        if moved {
            let mine: Vec<u64> = from
                .iter()
                .filter(|(_, s)| s.0 == n)
                .map(|(t, _)| *t)
                .collect();
            for t in mine {
                if let Some(s) = from.remove(&t) {
                    to.insert(t, s);
                }
            }
        }
    }
}

fn chunk_name(index: u64) -> String {
    format!("{index:016x}.chunk")
}

/// The file at the cache's root that says how its chunks were cut: a cache directory
/// of another chunk size cannot be read (chunk N would be other bytes), so it is
/// emptied at open.
const FORMAT_FILE: &str = "format";

#[derive(Debug)]
pub(super) struct DiskTier {
    pub(super) root: PathBuf,
    max_bytes: u64,
    pub(super) index: Mutex<DiskIndex>,
    pub(super) disabled: AtomicBool,
}

impl DiskTier {
    pub(super) fn open(
        root: &Path,
        max_bytes: u64,
        chunk_size: usize,
    ) -> std::io::Result<DiskTier> {
        std::fs::create_dir_all(root)?;
        let format = format!("s3lun cache 1\nchunk_size {chunk_size}\n");
        let marker = root.join(FORMAT_FILE);
        let empty_it = std::fs::read_to_string(&marker).map_or(true, |f| f != format);
        if empty_it {
            remove_chunk_dirs(root);
            std::fs::write(&marker, &format)?;
        }
        let mut index = DiskIndex::default();
        let mut found: Vec<(Slot, u64, std::time::SystemTime)> = Vec::new();
        for d in std::fs::read_dir(root)? {
            let d = d?;
            if !d.file_type()?.is_dir() {
                continue;
            }
            let name = d.file_name().to_string_lossy().to_string();
            // A directory is the image its key file names, or nothing of ours.
            let owned =
                std::fs::read_to_string(d.path().join("key")).is_ok_and(|k| key_dir(&k) == name);
            if !owned {
                warn!(dir = %d.path().display(), "cache directory without a matching key: removed");
                let _ = std::fs::remove_dir_all(d.path());
                continue;
            }
            let n = index.number(&name);
            for f in std::fs::read_dir(d.path())? {
                let f = f?;
                let fname = f.file_name().to_string_lossy().to_string();
                if fname.starts_with(".tmp") {
                    // A fill interrupted by a crash: never visible, now removed.
                    let _ = std::fs::remove_file(f.path());
                    continue;
                }
                let Some(i) = fname
                    .strip_suffix(".chunk")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                else {
                    continue;
                };
                let meta = f.metadata()?;
                found.push((
                    (n, i),
                    meta.len(),
                    meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                ));
            }
        }
        // Oldest first, so eviction after a restart still prefers stale chunks. Every
        // chunk is still checked (length, CRC32C) when it is read: kept, not trusted.
        found.sort_by_key(|(_, _, t)| *t);
        for (slot, size, _) in found {
            index.insert(slot, size);
        }
        // The bound is what is configured, but never more than the filesystem can
        // give: what the cache holds now and 90% of what is free. A default sized for
        // a site must not fill a small disk that other services share.
        let room = index.total + free_bytes(root) / 10 * 9;
        if room < max_bytes {
            info!(dir = %root.display(), max_bytes, room, "cache bound lowered to what the filesystem has room for");
        }
        let max_bytes = max_bytes.min(room);
        info!(dir = %root.display(), chunks = index.entries.len(), bytes = index.total, max_bytes, "cache opened");
        Ok(DiskTier {
            root: root.to_path_buf(),
            max_bytes,
            index: Mutex::new(index),
            disabled: AtomicBool::new(false),
        })
    }

    /// The index slot of a chunk (None past what the index can number).
    fn slot(idx: &mut DiskIndex, key: &ChunkKey) -> Option<Slot> {
        let i = u32::try_from(key.index).ok()?;
        Some((idx.number(&key_dir(&key.content)), i))
    }

    fn disable(&self, what: &str, e: &std::io::Error) {
        if !self.disabled.swap(true, Ordering::Relaxed) {
            warn!(dir = %self.root.display(), error = %e, "cache {what} failed: disk tier off, serving from S3 without caching");
        }
    }

    /// A store serving `content` opened (`+1`) or closed (`-1`): while one serves
    /// it, its chunks are evicted only when nothing else is left.
    pub(super) fn hold(&self, content: &str, delta: isize) {
        lock(&self.index).hold(&key_dir(content), delta);
    }

    /// Whether the index lists the chunk (no I/O).
    pub(super) fn contains(&self, key: &ChunkKey) -> bool {
        if self.disabled.load(Ordering::Relaxed) {
            return false;
        }
        let mut idx = lock(&self.index);
        Self::slot(&mut idx, key).is_some_and(|s| idx.contains(s))
    }

    /// Read and verify one chunk (blocking I/O).
    pub(super) fn read(&self, key: &ChunkKey, stats: &CacheStats) -> Option<Bytes> {
        if self.disabled.load(Ordering::Relaxed) {
            return None;
        }
        let (slot, rel) = {
            let mut idx = lock(&self.index);
            let slot = Self::slot(&mut idx, key)?;
            if !idx.touch(slot) {
                return None;
            }
            (slot, idx.path(slot))
        };
        let path = self.root.join(&rel);
        let data = map_chunk(&path);
        if data.is_none() {
            stats.corrupt.fetch_add(1, Ordering::Relaxed);
            warn!(chunk = %path.display(), "cache chunk failed its check: dropped, fetching again");
            let _ = std::fs::remove_file(&path);
            lock(&self.index).remove(slot);
        }
        data
    }

    /// Write one chunk: temp file, then rename (blocking I/O).
    pub(super) fn write(&self, key: &ChunkKey, data: &[u8], stats: &CacheStats) {
        if self.disabled.load(Ordering::Relaxed) {
            return;
        }
        let Some(slot) = Self::slot(&mut lock(&self.index), key) else {
            return;
        };
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
            std::fs::rename(&tmp, dir.join(chunk_name(key.index)))?;
            Ok(bytes.len() as u64)
        })();
        let size = match result {
            Ok(s) => s,
            Err(e) => return self.disable("write", &e),
        };
        let mut evict = Vec::new();
        {
            let mut idx = lock(&self.index);
            idx.insert(slot, size);
            while idx.total > self.max_bytes {
                let Some(victim) = idx.victim(slot) else {
                    break;
                };
                evict.push(idx.path(victim));
                idx.remove(victim);
            }
        }
        for v in evict {
            stats.evictions.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(self.root.join(v));
        }
    }

    /// Check every chunk file; returns (good, bad) counts; bad ones are removed.
    pub(super) fn verify(&self) -> (u64, u64) {
        let slots: Vec<(Slot, PathBuf)> = {
            let idx = lock(&self.index);
            idx.entries.keys().map(|s| (*s, idx.path(*s))).collect()
        };
        let (mut good, mut bad) = (0, 0);
        for (slot, rel) in slots {
            let p = self.root.join(&rel);
            if map_chunk(&p).is_some() {
                good += 1;
            } else {
                bad += 1;
                let _ = std::fs::remove_file(&p);
                lock(&self.index).remove(slot);
            }
        }
        (good, bad)
    }

    /// Remove the chunks of one image (or all): (chunks, bytes) removed. `content`
    /// is what [`crate::store::key::namespace_matches`] takes: a namespace, an
    /// object URL or an ETag, matched against the `key` file of each directory.
    pub(super) fn purge(&self, content: Option<&str>) -> (u64, u64) {
        let dirs: Option<Vec<String>> = content.map(|want| {
            std::fs::read_dir(&self.root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|d| {
                    std::fs::read_to_string(d.path().join("key"))
                        .is_ok_and(|ns| crate::store::key::namespace_matches(&ns, want))
                })
                .map(|d| d.file_name().to_string_lossy().to_string())
                .collect()
        });
        let mut idx = lock(&self.index);
        let numbers: Option<Vec<u32>> = dirs.map(|ds| {
            ds.iter()
                .filter_map(|d| idx.numbers.get(d.as_str()).copied())
                .collect()
        });
        let gone: Vec<Slot> = idx
            .entries
            .keys()
            .filter(|s| numbers.as_ref().is_none_or(|ns| ns.contains(&s.0)))
            .copied()
            .collect();
        let (mut chunks, mut bytes) = (0, 0);
        for slot in gone {
            let rel = idx.path(slot);
            if let Some(size) = idx.remove(slot) {
                chunks += 1;
                bytes += size;
                let _ = std::fs::remove_file(self.root.join(&rel));
            }
        }
        (chunks, bytes)
    }

    /// (chunks, bytes) on disk.
    pub(super) fn usage(&self) -> (usize, u64) {
        let idx = lock(&self.index);
        (idx.entries.len(), idx.total)
    }
}

/// The disk writer: one blocking task of the cache's runtime, at low priority, that
/// writes what the cache hands it until the cache is dropped (which closes the
/// channel). Every chunk it is done with is taken out of `writing` and waiters on
/// [`super::ChunkCache::flush`] are woken.
pub(super) fn write_behind(
    cache: Weak<ChunkCache>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(ChunkKey, Bytes)>,
) {
    let tid = set_own_priority(WRITER_NICE);
    while let Some((key, data)) = rx.blocking_recv() {
        let Some(cache) = cache.upgrade() else {
            break;
        };
        if let Some(disk) = &cache.disk {
            disk.write(&key, &data, &cache.stats);
        }
        cache.written(&key, data.len() as u64);
    }
    // The thread goes back to the runtime's pool: at normal priority.
    if let Some(tid) = tid {
        set_priority(tid, 0);
    }
}

/// Writing a cold image must not take the cores that serve it.
const WRITER_NICE: i32 = 10;

fn set_own_priority(nice: i32) -> Option<libc::id_t> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    set_priority(tid, nice).then_some(tid)
}

fn set_priority(tid: libc::id_t, nice: i32) -> bool {
    // SAFETY: plain syscall on this thread's own id.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0 }
}

/// Bytes free for an unprivileged writer on the filesystem of `dir` (unbounded if
/// the filesystem cannot say).
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return u64::MAX / 2;
    };
    // SAFETY: statvfs fills the struct it is given; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return u64::MAX / 2;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
}

/// Remove every image directory of the cache root (another chunk size's chunks).
fn remove_chunk_dirs(root: &Path) {
    let dirs = std::fs::read_dir(root).into_iter().flatten().flatten();
    let mut removed = 0;
    for d in dirs.filter(|d| d.file_type().is_ok_and(|t| t.is_dir())) {
        if std::fs::remove_dir_all(d.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        info!(dir = %root.display(), images = removed, "cache of another format or chunk size: emptied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::Arc;

    /// Counts what this thread allocates (tests run in parallel on other threads).
    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = LIVE.try_with(|c| c.set(c.get() + l.size() as isize));
            // SAFETY: the caller's layout, passed on.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            let _ = LIVE.try_with(|c| c.set(c.get() - l.size() as isize));
            // SAFETY: allocated by `alloc` above with this layout.
            unsafe { System.dealloc(p, l) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    #[test]
    fn the_index_of_100_gib_of_128_kib_chunks_fits_in_64_mib() {
        let before = LIVE.with(Cell::get);
        let mut idx = DiskIndex::default();
        let chunks = (100u64 << 30) / (128 << 10);
        // Five images of 20 GiB, two of them being served.
        for image in 0..5u32 {
            let n = idx.number(&key_dir(&format!("image-{image}")));
            for i in 0..(chunks / 5) as u32 {
                idx.insert((n, i), (128 << 10) + 24);
            }
        }
        idx.hold(&key_dir("image-1"), 1);
        idx.hold(&key_dir("image-3"), 1);
        let used = LIVE.with(Cell::get) - before;
        eprintln!(
            "{} chunks: {:.1} MiB, {:.0} bytes each",
            idx.entries.len(),
            used as f64 / (1 << 20) as f64,
            used as f64 / idx.entries.len() as f64
        );
        assert_eq!(idx.entries.len() as u64, chunks);
        assert!(used < 64 << 20, "{used} bytes of index");
    }

    fn key(content: &str, index: u64) -> ChunkKey {
        ChunkKey {
            content: Arc::from(content),
            index,
        }
    }

    #[test]
    fn eviction_keeps_the_images_being_served_and_a_restart_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let stats = CacheStats::default();
        let per = (4096 + super::super::chunk::HEADER) as u64;
        let tier = DiskTier::open(dir.path(), 8 * per, 4096).unwrap();
        tier.hold("served", 1);
        for i in 0..4 {
            tier.write(&key("served", i), &[1; 4096], &stats);
        }
        // Newer chunks of an image nobody serves: still the first to go.
        for i in 0..8 {
            tier.write(&key("idle", i), &[2; 4096], &stats);
        }
        assert!((0..4).all(|i| tier.contains(&key("served", i))));
        assert_eq!(
            (0..8).filter(|i| tier.contains(&key("idle", *i))).count(),
            4
        );
        // Nothing else left: the served image's oldest chunks go, as a last resort.
        tier.hold("idle", 1);
        tier.write(&key("served", 4), &[1; 4096], &stats);
        assert_eq!(tier.usage().0, 8);
        assert!(!tier.contains(&key("served", 0)));
        // A restart keeps what is on disk, and reads check every chunk.
        drop(tier);
        let again = DiskTier::open(dir.path(), 8 * per, 4096).unwrap();
        assert_eq!(again.usage().0, 8);
        assert_eq!(
            &again.read(&key("served", 4), &stats).unwrap()[..],
            &[1; 4096]
        );
        // A cache of another chunk size is emptied, never misread.
        drop(again);
        let other = DiskTier::open(dir.path(), 8 * per, 8192).unwrap();
        assert_eq!(other.usage().0, 0);
    }
}
