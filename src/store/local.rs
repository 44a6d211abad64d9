//! A local image file, memory-mapped once and served as zero-copy `Bytes` slices.
//! The file must not shrink while it is served (a mapped page past the new end
//! would fault); images are read-only artifacts, replaced by rename, not in place.

use std::path::Path;

use bytes::Bytes;
use memmap2::Mmap;

use super::{BlockStore, ReadFuture, StoreError};

#[derive(Debug)]
pub struct LocalFile {
    path: String,
    all: Bytes,
}

impl LocalFile {
    pub fn open(path: &Path) -> Result<LocalFile, StoreError> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| StoreError::Io {
            path: name.clone(),
            msg: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(StoreError::Empty(name));
        }
        // SAFETY: the mapping is read-only; see the module note on truncation.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(LocalFile {
            path: name,
            all: Bytes::from_owner(map),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl BlockStore for LocalFile {
    fn size(&self) -> u64 {
        self.all.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
        let size = self.size();
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= size => {
                ReadFuture::Ready(Ok(self.all.slice(offset as usize..end as usize)))
            }
            _ => ReadFuture::Ready(Err(StoreError::OutOfRange { offset, len, size })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::read_padded;

    #[tokio::test]
    async fn reads_slices_and_pads_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"hello world").unwrap();
        let f = LocalFile::open(&p).unwrap();
        assert_eq!(f.size(), 11);
        assert_eq!(&f.read_at(6, 5).wait().await.unwrap()[..], b"world");
        assert!(f.read_at(6, 6).wait().await.is_err());
        let padded = read_padded(&f, 6, 10).wait().await.unwrap();
        assert_eq!(&padded[..], b"world\0\0\0\0\0");
        let beyond = read_padded(&f, 20, 4).wait().await.unwrap();
        assert_eq!(&beyond[..], &[0u8; 4]);
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(LocalFile::open(&p), Err(StoreError::Empty(_))));
    }
}
