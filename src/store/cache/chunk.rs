//! The chunk: its key (content key and index), where its file lives, and the on-disk
//! format (magic, version, length and CRC32C ahead of the bytes), checked on every
//! read so a damaged file is never served.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ChunkKey {
    pub(super) content: Arc<str>,
    pub(super) index: u64,
}

const MAGIC: &[u8; 4] = b"S3LC";
pub(super) const HEADER: usize = 24;

/// Directory name for a content key: a hash, since keys may hold any characters.
pub(super) fn key_dir(content: &str) -> String {
    hex::encode(&Sha256::digest(content.as_bytes())[..16])
}

pub(super) fn encode_chunk(data: &[u8]) -> Vec<u8> {
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
pub(super) fn map_chunk(path: &Path) -> Option<Bytes> {
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: read-only mapping of a file nobody truncates (see above).
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    decode_chunk(Bytes::from_owner(map))
}

/// The chunk's bytes if the file is whole and its CRC matches.
pub(super) fn decode_chunk(raw: Bytes) -> Option<Bytes> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
