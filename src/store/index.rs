//! The chunk digest index: an optional sidecar object beside an image
//! (`<key>.s3lun-index`) that lists the SHA-256 of every chunk of one version of it
//! (the ETag it describes, its size, the chunk size) and of the whole image. Where
//! one exists and describes the ETag being served, every chunk fetched from S3 is
//! checked against it before it is cached or served: a mismatch (a byte flipped on the
//! way, a proxy that splices) is fetched again, then answered with a MEDIUM ERROR,
//! never served. Building, parsing and checking are pure; the S3 side is in `tools`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the sidecar of `s3://bucket/key` is called.
pub const SUFFIX: &str = ".s3lun-index";

/// Sidecars above this are not ours (a 22 GB image at 1 MiB chunks is 1.4 MB).
pub const MAX_INDEX: u64 = 64 << 20;

/// The chunk size `s3lun index` uses unless told: the cache's chunk size must be a
/// multiple of it (the default, 128 KiB, is; so is every larger power of two).
pub const DEFAULT_CHUNK: u64 = 128 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkIndex {
    /// Format version: 1.
    pub version: u32,
    /// The ETag (unquoted) of the version described.
    pub etag: String,
    pub size: u64,
    pub chunk_size: u64,
    /// SHA-256 of the whole image, hex.
    pub sha256: String,
    /// SHA-256 of each chunk, hex, in order (the last may be short).
    pub chunks: Vec<String>,
}

/// Why a sidecar cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("the index does not parse: {0}")]
    Invalid(String),
    #[error("the index describes ETag {index}, the object is at {object}")]
    OtherVersion { index: String, object: String },
    #[error("the index is inconsistent: {0}")]
    Inconsistent(String),
}

impl ChunkIndex {
    /// Parse a sidecar and check that it describes an object at `etag` of `size`.
    pub fn parse(bytes: &[u8], etag: &str, size: u64) -> Result<ChunkIndex, IndexError> {
        let ix: ChunkIndex =
            serde_json::from_slice(bytes).map_err(|e| IndexError::Invalid(e.to_string()))?;
        if ix.version != 1 {
            return Err(IndexError::Invalid(format!("version {}", ix.version)));
        }
        if !crate::store::s3::same_etag(&ix.etag, etag) {
            return Err(IndexError::OtherVersion {
                index: ix.etag,
                object: etag.to_string(),
            });
        }
        if ix.size != size || ix.chunk_size == 0 {
            return Err(IndexError::Inconsistent(format!(
                "size {} (object {size}), chunk size {}",
                ix.size, ix.chunk_size
            )));
        }
        if ix.chunks.len() as u64 != size.div_ceil(ix.chunk_size)
            || ix.chunks.iter().any(|c| c.len() != 64)
        {
            return Err(IndexError::Inconsistent(format!(
                "{} digests for {} chunks",
                ix.chunks.len(),
                size.div_ceil(ix.chunk_size)
            )));
        }
        Ok(ix)
    }

    /// Whether `data`, read at `offset`, is what the index says. Only ranges made of
    /// whole index chunks can be checked: `Err` names a range that cannot.
    pub fn check(&self, offset: u64, data: &[u8]) -> Result<bool, String> {
        let cs = self.chunk_size;
        let end = offset + data.len() as u64;
        if !offset.is_multiple_of(cs)
            || (!end.is_multiple_of(cs) && end != self.size)
            || end > self.size
        {
            return Err(format!(
                "{}..{end} is not made of whole {cs}-byte index chunks",
                offset
            ));
        }
        let first = offset / cs;
        for (i, piece) in data.chunks(cs as usize).enumerate() {
            let want = &self.chunks[(first + i as u64) as usize];
            if hex::encode(Sha256::digest(piece)) != *want {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Builds an index from an image's bytes, in order, in pieces of any size.
pub struct IndexBuilder {
    chunk_size: u64,
    whole: Sha256,
    chunk: Sha256,
    in_chunk: u64,
    size: u64,
    chunks: Vec<String>,
}

impl IndexBuilder {
    pub fn new(chunk_size: u64) -> IndexBuilder {
        IndexBuilder {
            chunk_size: chunk_size.max(4096),
            whole: Sha256::new(),
            chunk: Sha256::new(),
            in_chunk: 0,
            size: 0,
            chunks: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = ((self.chunk_size - self.in_chunk) as usize).min(data.len());
            self.chunk.update(&data[..take]);
            self.in_chunk += take as u64;
            data = &data[take..];
            if self.in_chunk == self.chunk_size {
                let done = std::mem::take(&mut self.chunk);
                self.chunks.push(hex::encode(done.finalize()));
                self.in_chunk = 0;
            }
        }
    }

    pub fn finish(mut self, etag: &str) -> ChunkIndex {
        if self.in_chunk > 0 {
            self.chunks.push(hex::encode(self.chunk.finalize()));
        }
        ChunkIndex {
            version: 1,
            etag: etag.trim_matches('"').to_string(),
            size: self.size,
            chunk_size: self.chunk_size,
            sha256: hex::encode(self.whole.finalize()),
            chunks: self.chunks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn index_of(data: &[u8], cs: u64) -> ChunkIndex {
        let mut b = IndexBuilder::new(cs);
        // Pieces that straddle chunk boundaries.
        for piece in data.chunks(3000) {
            b.update(piece);
        }
        b.finish("\"abc-2\"")
    }

    #[test]
    fn builds_parses_and_checks_whole_chunks() {
        let data = image(5 * 4096 + 100);
        let ix = index_of(&data, 4096);
        assert_eq!(ix.chunks.len(), 6);
        assert_eq!(ix.sha256, hex::encode(Sha256::digest(&data)));
        let text = serde_json::to_vec(&ix).unwrap();
        let back = ChunkIndex::parse(&text, "abc-2", data.len() as u64).unwrap();
        assert_eq!(back, ix);
        assert_eq!(ix.check(0, &data[..8192]), Ok(true));
        assert_eq!(ix.check(5 * 4096, &data[5 * 4096..]), Ok(true));
        let mut bad = data[4096..8192].to_vec();
        bad[17] ^= 1;
        assert_eq!(ix.check(4096, &bad), Ok(false));
        assert!(ix.check(100, &data[100..4196]).is_err());
    }

    #[test]
    fn an_index_of_another_version_or_shape_is_refused() {
        let data = image(10_000);
        let text = serde_json::to_vec(&index_of(&data, 4096)).unwrap();
        let err = |etag: &str, size: u64| ChunkIndex::parse(&text, etag, size).err();
        assert!(matches!(
            err("def-2", 10_000),
            Some(IndexError::OtherVersion { .. })
        ));
        assert!(matches!(
            err("abc-2", 9_999),
            Some(IndexError::Inconsistent(_))
        ));
        assert!(matches!(
            ChunkIndex::parse(b"{}", "abc-2", 1),
            Err(IndexError::Invalid(_))
        ));
    }
}
