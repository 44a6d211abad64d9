//! The persistent tier: chunk files under the cache directory (the directory is the
//! index, rebuilt by a scan at start), least recently used evicted past the size
//! bound, files written aside and renamed in whole, and the write-behind task that
//! puts fetched chunks there. A tier that fails (disk full, unwritable) switches
//! itself off and reads go on from memory and S3.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};

use bytes::Bytes;
use tracing::{info, warn};

use super::chunk::{encode_chunk, key_dir, map_chunk, ChunkKey};
use super::{lock, CacheStats, ChunkCache};

#[derive(Debug, Default)]
pub(super) struct DiskIndex {
    /// Relative path -> (size, last use tick).
    pub(super) entries: HashMap<PathBuf, (u64, u64)>,
    pub(super) total: u64,
    tick: u64,
}

#[derive(Debug)]
pub(super) struct DiskTier {
    pub(super) root: PathBuf,
    max_bytes: u64,
    pub(super) index: Mutex<DiskIndex>,
    pub(super) disabled: AtomicBool,
}

impl DiskTier {
    pub(super) fn open(root: &Path, max_bytes: u64) -> std::io::Result<DiskTier> {
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
    pub(super) fn contains(&self, key: &ChunkKey) -> bool {
        !self.disabled.load(Ordering::Relaxed)
            && lock(&self.index).entries.contains_key(&Self::rel(key))
    }

    /// Read and verify one chunk (blocking I/O).
    pub(super) fn read(&self, key: &ChunkKey, stats: &CacheStats) -> Option<Bytes> {
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
    pub(super) fn write(&self, key: &ChunkKey, data: &[u8], stats: &CacheStats) {
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

    /// Check every chunk file; returns (good, bad) counts; bad ones are removed.
    pub(super) fn verify(&self) -> (u64, u64) {
        let paths: Vec<PathBuf> = lock(&self.index).entries.keys().cloned().collect();
        let (mut good, mut bad) = (0, 0);
        for rel in paths {
            let p = self.root.join(&rel);
            if map_chunk(&p).is_some() {
                good += 1;
            } else {
                bad += 1;
                let _ = std::fs::remove_file(&p);
                let mut idx = lock(&self.index);
                if let Some((s, _)) = idx.entries.remove(&rel) {
                    idx.total -= s;
                }
            }
        }
        (good, bad)
    }

    /// Remove the chunks of one image (or all): (chunks, bytes) removed. `content`
    /// is what [`crate::store::key::namespace_matches`] takes: a namespace, an
    /// object URL or an ETag, matched against the `key` file of each directory.
    pub(super) fn purge(&self, content: Option<&str>) -> (u64, u64) {
        let dirs: Option<Vec<PathBuf>> = content.map(|want| {
            std::fs::read_dir(&self.root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|d| {
                    std::fs::read_to_string(d.path().join("key"))
                        .is_ok_and(|ns| crate::store::key::namespace_matches(&ns, want))
                })
                .map(|d| PathBuf::from(d.file_name()))
                .collect()
        });
        let mut idx = lock(&self.index);
        let gone: Vec<PathBuf> = idx
            .entries
            .keys()
            .filter(|rel| {
                dirs.as_ref()
                    .is_none_or(|ds| ds.iter().any(|d| rel.starts_with(d)))
            })
            .cloned()
            .collect();
        let (mut chunks, mut bytes) = (0, 0);
        for rel in gone {
            if let Some((size, _)) = idx.entries.remove(&rel) {
                idx.total -= size;
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
