//! Boot profiles: which parts of an image the first boots through a worker read, in
//! the order they read them, shared with every other worker through S3, so that one
//! worker's first boot teaches the fleet and the storm that follows finds warm caches.
//!
//! A profile is a hint. What one says is checked against the image it is for (its
//! cache namespace and size), bounded in entries and bytes, and turned into chunks of
//! this worker's chunk size; anything else (missing, stale, garbage, oversized) is
//! ignored with a log line and costs nothing but the hint. Parsing, checking and
//! recording are pure; loading and publishing are a [`ProfileStore`]'s (S3:
//! `crate::store::s3::profiles`).

use std::fmt::Debug;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// The largest profile object read: 64k extents of two numbers fit with room.
pub const MAX_OBJECT: u64 = 4 << 20;
/// Extents a profile may hold (and a recorder keeps).
pub const MAX_EXTENTS: usize = 65_536;

/// Where an image's profile lives and how it is written.
pub trait ProfileStore: Send + Sync + Debug {
    /// The profile's bytes, `None` where there is none.
    fn load(&self) -> BoxFuture<'static, Result<Option<Bytes>, StoreError>>;
    /// Publish a profile unless one exists: `true` if this one is now published,
    /// `false` if another was first.
    fn publish(&self, body: Bytes) -> BoxFuture<'static, Result<bool, StoreError>>;
    /// For log lines: where the profile lives.
    fn name(&self) -> String;
}

/// One image's profile, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version: 1.
    pub version: u32,
    /// The cache namespace of the image (object URL, ETag, size): a profile of another
    /// version of the object is not this image's.
    pub namespace: String,
    pub size: u64,
    /// Byte ranges `[offset, length]`, in the order they were first read.
    pub extents: Vec<[u64; 2]>,
    /// Who recorded it, over how many seconds (for operators).
    #[serde(default)]
    pub recorded_by: String,
    #[serde(default)]
    pub recorded_secs: u64,
}

/// Why a profile is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("the profile does not parse: {0}")]
    Invalid(String),
    #[error("the profile is of another image or version ({0})")]
    OtherImage(String),
    #[error("the profile is out of bounds: {0}")]
    OutOfBounds(String),
}

impl Profile {
    /// Parse and check a stored profile against the image it is for.
    pub fn parse(
        bytes: &[u8],
        namespace: &str,
        size: u64,
        max_bytes: u64,
    ) -> Result<Profile, ProfileError> {
        let p: Profile =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Invalid(e.to_string()))?;
        if p.version != 1 {
            return Err(ProfileError::Invalid(format!("version {}", p.version)));
        }
        if p.namespace != namespace || p.size != size {
            return Err(ProfileError::OtherImage(format!(
                "{} of {} bytes",
                p.namespace, p.size
            )));
        }
        if p.extents.len() > MAX_EXTENTS {
            return Err(ProfileError::OutOfBounds(format!(
                "{} extents, at most {MAX_EXTENTS}",
                p.extents.len()
            )));
        }
        let mut total: u64 = 0;
        for [offset, len] in &p.extents {
            let end = offset.checked_add(*len);
            if *len == 0 || end.is_none_or(|e| e > size) {
                return Err(ProfileError::OutOfBounds(format!(
                    "extent {offset}+{len} outside an image of {size} bytes"
                )));
            }
            total = total.saturating_add(*len);
        }
        if total > max_bytes {
            return Err(ProfileError::OutOfBounds(format!(
                "asks for {total} bytes, more than the {max_bytes} allowed"
            )));
        }
        Ok(p)
    }

    /// The chunks (of `chunk_size`) the profile covers, each once, in its order.
    pub fn chunks(&self, chunk_size: u64) -> Vec<u64> {
        let chunks = self.size.div_ceil(chunk_size.max(1));
        let mut seen = Bitset::new(chunks);
        let mut out = Vec::new();
        for [offset, len] in &self.extents {
            let (first, last) = (offset / chunk_size, (offset + len - 1) / chunk_size);
            for c in first..=last.min(chunks.saturating_sub(1)) {
                if seen.insert(c) {
                    out.push(c);
                }
            }
        }
        out
    }

    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(|[_, l]| l).sum()
    }

    pub fn encode(&self) -> Bytes {
        serde_json::to_vec(self).map_or_else(|_| Bytes::new(), Bytes::from)
    }
}

/// A set of chunk numbers below a bound.
#[derive(Debug, Default)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: u64) -> Bitset {
        Bitset(vec![0; n.div_ceil(64) as usize])
    }

    /// Add `i`; whether it was new (and in bounds).
    fn insert(&mut self, i: u64) -> bool {
        let Some(w) = self.0.get_mut((i / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }
}

/// The first-read order of an image's chunks, over every session, bounded.
#[derive(Debug, Default)]
pub struct Recorder {
    seen: Bitset,
    order: Vec<u64>,
}

impl Recorder {
    pub fn new(chunks: u64) -> Recorder {
        Recorder {
            seen: Bitset::new(chunks),
            order: Vec::new(),
        }
    }

    /// Chunks `first..=last` were read.
    pub fn read(&mut self, first: u64, last: u64) {
        for c in first..=last {
            if self.order.len() >= MAX_EXTENTS {
                return;
            }
            if self.seen.insert(c) {
                self.order.push(c);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The profile of what was recorded: runs of consecutive chunks as byte extents.
    pub fn profile(&self, namespace: &str, size: u64, chunk_size: u64, secs: u64) -> Profile {
        let mut extents: Vec<[u64; 2]> = Vec::new();
        for &c in &self.order {
            let offset = c * chunk_size;
            let len = chunk_size.min(size.saturating_sub(offset));
            match extents.last_mut() {
                Some(e) if e[0] + e[1] == offset => e[1] += len,
                _ => extents.push([offset, len]),
            }
        }
        Profile {
            version: 1,
            namespace: namespace.to_string(),
            size,
            extents,
            recorded_by: gethostname::gethostname().to_string_lossy().to_string(),
            recorded_secs: secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "s3://b/k|etag=abc|size=1000000";

    #[test]
    fn recorded_order_round_trips_into_chunks_of_any_size() {
        let mut r = Recorder::new(10);
        r.read(7, 8);
        r.read(0, 0);
        r.read(8, 9); // 8 again: once
        r.read(3, 3);
        let p = r.profile(NS, 1_000_000, 100_000, 60);
        assert_eq!(
            p.extents,
            vec![
                [700_000, 200_000],
                [0, 100_000],
                [900_000, 100_000],
                [300_000, 100_000]
            ]
        );
        let back = Profile::parse(&p.encode(), NS, 1_000_000, 1 << 30).unwrap();
        assert_eq!(back.chunks(100_000), vec![7, 8, 0, 9, 3]);
        // Another worker with bigger chunks: the same ranges, its own chunks.
        assert_eq!(back.chunks(400_000), vec![1, 2, 0]);
    }

    #[test]
    fn garbage_stale_and_oversized_profiles_are_refused() {
        let good = Recorder {
            seen: Bitset::new(1),
            order: vec![0],
        }
        .profile(NS, 1_000_000, 100_000, 1);
        let parse = |p: &Profile, max| Profile::parse(&p.encode(), NS, 1_000_000, max);
        assert!(parse(&good, 1 << 20).is_ok());
        assert!(matches!(
            Profile::parse(b"\x00garbage", NS, 1_000_000, 1 << 20),
            Err(ProfileError::Invalid(_))
        ));
        let mut other = good.clone();
        other.namespace = "s3://b/k|etag=def|size=1000000".into();
        assert!(matches!(
            parse(&other, 1 << 20),
            Err(ProfileError::OtherImage(_))
        ));
        let mut outside = good.clone();
        outside.extents = vec![[999_999, 2]];
        assert!(matches!(
            parse(&outside, 1 << 20),
            Err(ProfileError::OutOfBounds(_))
        ));
        let mut wrap = good.clone();
        wrap.extents = vec![[u64::MAX, 2]];
        assert!(matches!(
            parse(&wrap, 1 << 20),
            Err(ProfileError::OutOfBounds(_))
        ));
        assert!(matches!(
            parse(&good, 10),
            Err(ProfileError::OutOfBounds(_))
        ));
        let mut many = good;
        many.extents = vec![[0, 1]; MAX_EXTENTS + 1];
        assert!(matches!(
            parse(&many, 1 << 30),
            Err(ProfileError::OutOfBounds(_))
        ));
    }

    #[test]
    fn a_recorder_is_bounded() {
        let mut r = Recorder::new(1 << 20);
        r.read(0, (1 << 20) - 1);
        assert_eq!(r.order.len(), MAX_EXTENTS);
    }
}
