//! The `[cache]` section: the block cache's tiers and read-ahead.

use std::path::PathBuf;

use serde::Deserialize;

use crate::store::cache::CacheSettings;

/// The block cache.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Persistent tier; default `$XDG_CACHE_HOME/s3lun/blocks` (or ~/.cache/...).
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
    pub memory_bytes: u64,
    pub chunk_size: usize,
    /// Chunks a sequential reader is read ahead by (a window fetched at a time).
    pub readahead_chunks: usize,
    /// Largest single ranged GET read-ahead issues (runs of missing chunks).
    pub max_fetch_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        let d = CacheSettings::default();
        CacheConfig {
            dir: None,
            max_bytes: d.max_disk_bytes,
            memory_bytes: d.memory_bytes,
            chunk_size: d.chunk_size,
            readahead_chunks: d.readahead,
            max_fetch_bytes: d.max_fetch,
        }
    }
}

impl CacheConfig {
    pub fn settings(&self) -> CacheSettings {
        let dir = self.dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("s3lun/blocks")
        });
        CacheSettings {
            dir: Some(dir),
            max_disk_bytes: self.max_bytes,
            memory_bytes: self.memory_bytes,
            chunk_size: self.chunk_size.max(4096),
            readahead: self.readahead_chunks,
            max_fetch: self.max_fetch_bytes,
        }
    }
}
