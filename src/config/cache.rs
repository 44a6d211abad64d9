//! The `[cache]` section: the block cache's tiers, read-ahead, background fetching
//! and boot profiles.

use std::path::PathBuf;

use serde::Deserialize;

use crate::store::cache::{BackgroundSettings, CacheSettings, ProfileSettings};

/// The block cache.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Persistent tier; default `$XDG_CACHE_HOME/s3lun/blocks` (or ~/.cache/...).
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
    pub memory_bytes: u64,
    pub chunk_size: usize,
    /// The largest window (in chunks) a proven sequential reader is read ahead by.
    pub readahead_chunks: usize,
    /// Largest single ranged GET read-ahead issues (runs of missing chunks).
    pub max_fetch_bytes: usize,
    /// Concurrent background GETs (profiles, whole images) of the worker.
    pub prefetch_gets: usize,
    /// Concurrent background GETs of one image.
    pub prefetch_gets_per_image: usize,
    /// Background bytes per second of the worker (0: no bound).
    pub prefetch_bytes_per_sec: u64,
    /// Background bytes per second of one image (0: the worker's bound only).
    pub prefetch_image_bytes_per_sec: u64,
    /// Images up to this size are fetched whole in the background (0: none).
    pub prefetch_whole_max_bytes: u64,
    /// Record, publish and use fleet-shared boot profiles.
    pub profiles: bool,
    /// How long after an image's first read its reads are recorded for its profile.
    pub profile_secs: u64,
    /// A profile that asks for more than this is ignored.
    pub profile_max_bytes: u64,
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
            prefetch_gets: d.background.gets,
            prefetch_gets_per_image: d.background.gets_per_image,
            prefetch_bytes_per_sec: d.background.bytes_per_sec,
            prefetch_image_bytes_per_sec: d.background.image_bytes_per_sec,
            prefetch_whole_max_bytes: d.background.whole_image_max,
            profiles: d.profiles.enabled,
            profile_secs: d.profiles.record_secs,
            profile_max_bytes: d.profiles.max_bytes,
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
            cut_bytes: CacheSettings::default().cut_bytes,
            background: BackgroundSettings {
                gets: self.prefetch_gets,
                gets_per_image: self.prefetch_gets_per_image,
                bytes_per_sec: self.prefetch_bytes_per_sec,
                image_bytes_per_sec: self.prefetch_image_bytes_per_sec,
                whole_image_max: self.prefetch_whole_max_bytes,
            },
            profiles: ProfileSettings {
                enabled: self.profiles,
                record_secs: self.profile_secs,
                max_bytes: self.profile_max_bytes,
            },
        }
    }
}
