//! Where image bytes come from: a `read_at`-style trait with a memory-mapped local
//! file implementation. S3 and the block cache implement the same trait; the LUN
//! number -> store map the connections read through is [`served::ServedLuns`].

pub mod cache;
pub mod error;
pub mod index;
pub mod key;
pub mod local;
pub mod mem;
pub mod s3;
pub mod served;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use error::StoreError;
pub use local::LocalFile;
pub use mem::MemStore;
pub use served::ServedLuns;

/// A read that is either already done (a cache or mmap hit: no allocation, no task) or
/// still running.
pub enum ReadFuture {
    Ready(Result<Bytes, StoreError>),
    Pending(Pin<Box<dyn Future<Output = Result<Bytes, StoreError>> + Send + 'static>>),
}

impl ReadFuture {
    pub async fn wait(self) -> Result<Bytes, StoreError> {
        match self {
            ReadFuture::Ready(r) => r,
            ReadFuture::Pending(f) => f.await,
        }
    }
}

/// A streamed read: once the request is answered, the body as it arrives.
pub type StreamFuture =
    Pin<Box<dyn Future<Output = Result<s3::BodyStream, StoreError>> + Send + 'static>>;

/// Whether a store can serve its image (for `/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    #[default]
    Ok,
    /// The object changed since it was opened: reads fail until the next scan
    /// reopens it.
    Stale,
    /// The object is gone: only what the cache holds is served.
    NotReady,
}

/// What a store tells `/status` about itself.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus {
    /// The content key its bytes (and cached chunks) are guarded by.
    pub content_key: Option<String>,
    /// Chunks cached of all chunks, for a store read through the cache.
    pub cached: Option<(u64, u64)>,
    pub health: Health,
}

pub trait BlockStore: Send + Sync + std::fmt::Debug {
    /// Size of the image in bytes.
    fn size(&self) -> u64;
    /// Read `len` bytes at `offset`; the range lies within `size()`.
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture;
    /// The same bytes as they arrive, where the store can stream them (one request
    /// for a long range); `None` where it cannot.
    fn read_stream(&self, _offset: u64, _len: usize) -> Option<StreamFuture> {
        None
    }
    /// Its content key, cached share and health.
    fn status(&self) -> StoreStatus {
        StoreStatus::default()
    }
    /// Check bytes read at `offset` against what the store knows they must be (an
    /// S3 image's chunk digest index), before they are cached or served.
    fn verify(&self, _offset: u64, _data: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Read `len` bytes at `offset`, zero-filling whatever lies past the end of the image
/// (images are exposed rounded up to whole blocks).
pub fn read_padded(store: &dyn BlockStore, offset: u64, len: usize) -> ReadFuture {
    let size = store.size();
    let end = offset.saturating_add(len as u64);
    if end <= size {
        return store.read_at(offset, len);
    }
    let avail = size.saturating_sub(offset) as usize;
    let head = if avail > 0 {
        store.read_at(offset, avail)
    } else {
        ReadFuture::Ready(Ok(Bytes::new()))
    };
    let pad = move |b: Bytes| {
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&b);
        v.resize(len, 0);
        Bytes::from(v)
    };
    match head {
        ReadFuture::Ready(r) => ReadFuture::Ready(r.map(pad)),
        ReadFuture::Pending(f) => ReadFuture::Pending(Box::pin(async move { f.await.map(pad) })),
    }
}
