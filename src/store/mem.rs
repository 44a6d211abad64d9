//! An image held in memory: for fuzzing the session machine and for unit tests,
//! where a file or S3 would only add noise.

use bytes::Bytes;

use super::{BlockStore, ReadFuture};

#[derive(Debug, Clone)]
pub struct MemStore(pub Bytes);

impl BlockStore for MemStore {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(len).min(self.0.len());
        ReadFuture::Ready(Ok(self.0.slice(start..end)))
    }
}
