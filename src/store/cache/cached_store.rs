//! An image read through the cache: reads cut into chunks, answered at once when
//! every chunk is in memory, and read-ahead for sequential readers (a whole window
//! per GET, started once the reader is within half a window of its end).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::chunk::ChunkKey;
use super::flight::Fill;
use super::ChunkCache;
use crate::store::{BlockStore, ReadFuture, StoreStatus};

/// How far (in chunks) a read may land from where the last one ended and still count
/// as sequential: an initiator keeps several reads in flight, which arrive out of order.
const SEQUENTIAL_SLACK: u64 = 8;
/// Parallel streams an image fetched whole is split into.
const WHOLE_IMAGE_STREAMS: u64 = 4;

/// A store read through the cache.
#[derive(Debug)]
pub struct CachedStore {
    inner: Arc<dyn BlockStore>,
    content: Arc<str>,
    cache: Arc<ChunkCache>,
    size: u64,
    /// One past the last chunk read, to spot sequential readers.
    next_expected: AtomicU64,
    /// One past the last chunk read-ahead has asked for.
    frontier: AtomicU64,
}

impl CachedStore {
    pub fn new(
        inner: Arc<dyn BlockStore>,
        content_key: &str,
        cache: Arc<ChunkCache>,
    ) -> CachedStore {
        CachedStore {
            size: inner.size(),
            inner,
            content: Arc::from(content_key),
            cache,
            next_expected: AtomicU64::new(u64::MAX),
            frontier: AtomicU64::new(0),
        }
    }

    fn chunk_len(&self, index: u64) -> usize {
        let cs = self.cache.settings.chunk_size as u64;
        (self.size - index * cs).min(cs) as usize
    }

    fn key(&self, index: u64) -> ChunkKey {
        ChunkKey {
            content: Arc::clone(&self.content),
            index,
        }
    }

    fn chunks(&self) -> u64 {
        self.size.div_ceil(self.cache.settings.chunk_size as u64)
    }

    /// Start fetching the chunks `from..to` that are nowhere yet, in as few GETs as
    /// the fetch size allows (read-ahead).
    fn prefetch(&self, from: u64, to: u64) {
        let keys = (from..to.min(self.chunks()))
            .map(|i| (self.key(i), self.chunk_len(i)))
            .collect();
        let offset = from * self.cache.settings.chunk_size as u64;
        self.cache.fetch_runs(&self.inner, keys, offset);
    }

    /// Chunks per read-ahead window: as configured, but small enough that two windows
    /// ahead of a reader fit in half the memory tier, so read-ahead never evicts what
    /// the reader is about to take.
    fn window(&self) -> u64 {
        let s = &self.cache.settings;
        let slots = s.memory_bytes / s.chunk_size.max(1) as u64;
        (s.readahead as u64).min(slots / 4)
    }

    /// Where a read-ahead window ending at `to` should end: at the image's end when
    /// less than half a window would be left, as a request costs more than its bytes.
    fn window_end(&self, to: u64) -> u64 {
        let n = self.chunks();
        let half = self.window().div_ceil(2);
        if n.saturating_sub(to) < half {
            n
        } else {
            to
        }
    }

    /// Read-ahead for a sequential reader now at chunk `last`: a whole window at a
    /// time, once the reader is within half a window of what was asked for, so each
    /// window is one large GET rather than one GET per chunk.
    fn read_ahead(&self, last: u64) {
        let window = self.window();
        let frontier = self.frontier.load(Ordering::Relaxed).max(last + 1);
        if frontier - last > window || frontier >= self.chunks() {
            return;
        }
        let to = self.window_end(frontier + window);
        if self.frontier.fetch_max(to, Ordering::Relaxed) >= to {
            return; // another reader moved it already
        }
        self.prefetch(frontier, to);
    }

    /// Images up to this size are fetched whole from their first miss: as many
    /// streams as there are, each at most one read-ahead fetch, and a quarter of the
    /// memory tier (so the image stays in memory while its peers boot).
    fn whole_image_limit(&self) -> u64 {
        let s = &self.cache.settings;
        (WHOLE_IMAGE_STREAMS * s.max_fetch as u64).min(s.memory_bytes / 4)
    }

    pub fn chunk_count(&self) -> u64 {
        self.chunks()
    }

    pub fn chunk_future(&self, index: u64) -> Fill {
        self.cache
            .chunk(&self.inner, self.key(index), self.chunk_len(index))
    }
}

/// Cut `offset..offset + len` out of consecutive chunks starting at chunk `first`.
fn assemble(chunks: &[Bytes], first: u64, chunk_size: u64, offset: u64, len: usize) -> Bytes {
    let start = (offset - first * chunk_size) as usize;
    if chunks.len() == 1 {
        return chunks[0].slice(start..start + len);
    }
    let mut out = BytesMut::with_capacity(len);
    let mut skip = start;
    for c in chunks {
        let take = (c.len() - skip).min(len - out.len());
        out.extend_from_slice(&c[skip..skip + take]);
        skip = 0;
    }
    out.freeze()
}

impl BlockStore for CachedStore {
    fn size(&self) -> u64 {
        self.size
    }

    fn status(&self) -> StoreStatus {
        let chunks = self.chunks();
        StoreStatus {
            content_key: Some(self.content.to_string()),
            cached: Some((self.cache.present(&self.content, chunks), chunks)),
            health: self.inner.status().health,
        }
    }

    fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
        if len == 0 {
            return ReadFuture::Ready(Ok(Bytes::new()));
        }
        let cs = self.cache.settings.chunk_size as u64;
        let first = offset / cs;
        let last = (offset + len as u64 - 1) / cs;
        // A reader that continues near where it stopped is sequential: fetch ahead of
        // it. (Parallel requests of one sequential reader arrive a little out of order.)
        let prev = self.next_expected.swap(last + 1, Ordering::Relaxed);
        let window = self.window();
        let slack = window.min(SEQUENTIAL_SLACK);
        let sequential = prev != u64::MAX && first + slack >= prev && first <= prev + slack;
        let fetch_ahead = window > 0;
        if sequential && fetch_ahead {
            self.read_ahead(last);
        }
        let mut hit = Vec::with_capacity((last - first + 1) as usize);
        for i in first..=last {
            match self.cache.mem_get(&self.key(i)) {
                Some(b) => hit.push(b),
                None => break,
            }
        }
        if hit.len() as u64 == last - first + 1 {
            self.cache
                .stats
                .memory_hits
                .fetch_add(hit.len() as u64, Ordering::Relaxed);
            return ReadFuture::Ready(Ok(assemble(&hit, first, cs, offset, len)));
        }
        // The first miss of an image small enough starts fetching all of it, in
        // parallel streams: a booting node's reads are scattered over the image,
        // which all its peers will read too (readers cut the streams for what they
        // wait for: priority.rs).
        if prev == u64::MAX && fetch_ahead && self.size <= self.whole_image_limit() {
            // The last chunk first, alone: filesystems and partition tables keep
            // metadata at the end (squashfs's inode and directory tables, GPT's
            // backup header), which a mount reads before any file.
            let n = self.chunks();
            self.prefetch(n - 1, n);
            let rest = n - 1;
            let per = rest.div_ceil(WHOLE_IMAGE_STREAMS).max(1);
            for from in (0..rest).step_by(per as usize) {
                self.prefetch(from, (from + per).min(rest));
            }
            self.frontier.fetch_max(n, Ordering::Relaxed);
        }
        // A miss of a sequential reader (or of the first read) starts a whole window
        // as one streamed GET; the chunks asked for come first in it.
        else if (sequential || prev == u64::MAX) && fetch_ahead {
            let to = self.window_end((first + window).max(last + 1));
            self.prefetch(first, to);
            self.frontier.fetch_max(to, Ordering::Relaxed);
        }
        let fills: Vec<Fill> = (first..=last).map(|i| self.chunk_future(i)).collect();
        ReadFuture::Pending(Box::pin(async move {
            let chunks = futures::future::try_join_all(fills).await?;
            Ok(assemble(&chunks, first, cs, offset, len))
        }))
    }
}
