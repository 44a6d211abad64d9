//! Demand reads before read-ahead. A streamed read-ahead delivers its chunks in
//! order; a reader that needs a chunk far down such a stream (a booting node jumps
//! about its root filesystem) would wait for every chunk before it, at the shared
//! bandwidth. Instead the reader cuts the stream there: the chunk it needs is fetched
//! alone, first, with the whole bandwidth, and read-ahead resumes afterwards with the
//! rest. No chunk is fetched twice; a cut costs one request and the bytes the stream
//! had in flight. A sequential reader with requests in parallel asks for the chunks
//! after the one it waits for too: those demands follow one another and never cut.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::chunk::ChunkKey;
use super::{lock, ChunkCache};

/// A reader waits for the chunk arriving now and the one after it rather than cut,
/// and for whatever arrives within `CacheSettings::cut_bytes` (a cut costs a
/// request's latency and the bytes the stream had in flight: at 100 MB/s and 15 ms,
/// 1 MiB of stream is cheaper to wait for).
const WORTH_A_CUT: usize = 2;

/// One streamed run as readers see it.
#[derive(Debug)]
pub(super) struct RunControl {
    /// Chunk index of the run's first chunk.
    first: u64,
    /// Chunks of the run delivered so far.
    delivered: AtomicUsize,
    /// Position (in the run) a reader asked the stream to stop at; usize::MAX: none.
    cut: AtomicUsize,
    /// Positions (below 64) readers have asked for.
    demanded: AtomicU64,
    pub(super) wake: Notify,
}

impl RunControl {
    pub(super) fn new(first: u64, demanded: u64) -> RunControl {
        RunControl {
            first,
            delivered: AtomicUsize::new(0),
            cut: AtomicUsize::new(usize::MAX),
            demanded: AtomicU64::new(demanded),
            wake: Notify::new(),
        }
    }

    pub(super) fn delivered(&self, n: usize) {
        self.delivered.store(n, Ordering::Relaxed);
    }

    /// Where a reader asked the stream to stop, if it is still ahead of `done`.
    pub(super) fn cut_at(&self, done: usize) -> Option<usize> {
        let c = self.cut.load(Ordering::Relaxed);
        (c != usize::MAX && c > done).then_some(c)
    }

    /// Which positions from `from` on readers have asked for (for the runs a cut
    /// leaves, so a sequential reader's next demand still follows its last).
    pub(super) fn demanded_from(&self, from: usize) -> u64 {
        self.demanded
            .load(Ordering::Relaxed)
            .checked_shr(from as u32)
            .unwrap_or(0)
    }
}

impl ChunkCache {
    /// Register the chunks of a run to be streamed, so readers can find and cut it
    /// (before it starts, too); `demanded` as `RunControl::demanded_from` gives it.
    pub(super) fn register_run(&self, run: &[(ChunkKey, usize)], demanded: u64) -> Arc<RunControl> {
        let ctl = Arc::new(RunControl::new(
            run.first().map_or(0, |(k, _)| k.index),
            demanded,
        ));
        let mut runs = lock(&self.runs);
        for (k, _) in run {
            runs.insert(k.clone(), Arc::clone(&ctl));
        }
        ctl
    }

    /// Forget the run's chunks that are still registered to it.
    pub(super) fn unregister_run(&self, run: &[(ChunkKey, usize)], ctl: &Arc<RunControl>) {
        let mut runs = lock(&self.runs);
        for (k, _) in run {
            if runs.get(k).is_some_and(|c| Arc::ptr_eq(c, ctl)) {
                runs.remove(k);
            }
        }
    }

    /// A reader is waiting for `key`: if a stream will only reach it after two more
    /// chunks, cut the stream there.
    pub(super) fn demand(&self, key: &ChunkKey) {
        let Some(ctl) = lock(&self.runs).get(key).cloned() else {
            return;
        };
        let pos = key.index.saturating_sub(ctl.first) as usize;
        let bit = |p: usize| if p < 64 { 1u64 << p } else { 0 };
        let before = ctl.demanded.fetch_or(bit(pos), Ordering::Relaxed);
        // The chunk before it asked for too: a sequential reader, which the stream
        // serves in order anyway.
        let follows = pos > 0 && before & bit(pos - 1) != 0;
        let worth = WORTH_A_CUT.max(self.settings.cut_bytes / self.settings.chunk_size.max(1));
        if !follows && pos >= ctl.delivered.load(Ordering::Relaxed) + worth {
            self.stats.demand_cuts.fetch_add(1, Ordering::Relaxed);
            ctl.cut.fetch_min(pos, Ordering::Relaxed);
            ctl.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use futures::StreamExt;
    use tokio::runtime::Handle;

    use super::super::{BackgroundSettings, CacheSettings, CachedStore};
    use super::*;
    use crate::store::{BlockStore, ReadFuture, StoreError, StreamFuture};

    const CHUNK: usize = 4096;
    /// A link that moves one chunk per PER_CHUNK, per request.
    const PER_CHUNK: Duration = Duration::from_millis(20);

    /// An image behind a slow link: every byte it sends is counted.
    #[derive(Debug)]
    struct SlowLink {
        data: Bytes,
        sent: Arc<AtomicU64>,
    }

    impl BlockStore for SlowLink {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }
        fn read_at(&self, offset: u64, len: usize) -> ReadFuture {
            let b = self.data.slice(offset as usize..offset as usize + len);
            let sent = Arc::clone(&self.sent);
            ReadFuture::Pending(Box::pin(async move {
                tokio::time::sleep(PER_CHUNK * len.div_ceil(CHUNK) as u32).await;
                sent.fetch_add(len as u64, Ordering::SeqCst);
                Ok(b)
            }))
        }
        fn read_stream(&self, offset: u64, len: usize) -> Option<StreamFuture> {
            let b = self.data.slice(offset as usize..offset as usize + len);
            let sent = Arc::clone(&self.sent);
            Some(Box::pin(async move {
                let pieces = (0..len.div_ceil(CHUNK))
                    .map(move |i| b.slice(i * CHUNK..((i + 1) * CHUNK).min(len)));
                // A piece crosses the link only when the reader asks for it.
                let s = futures::stream::iter(pieces).then(move |p| {
                    let sent = Arc::clone(&sent);
                    async move {
                        tokio::time::sleep(PER_CHUNK).await;
                        sent.fetch_add(p.len() as u64, Ordering::SeqCst);
                        Ok::<Bytes, StoreError>(p)
                    }
                });
                Ok(s.boxed())
            }))
        }
    }

    /// An image of `size` bytes behind a slow link, read through a cache (memory
    /// only) in which images this small are fetched whole: its bytes, the bytes the
    /// link carried, the cache and the store.
    fn slow_image(
        size: usize,
        seed: usize,
    ) -> (Bytes, Arc<AtomicU64>, Arc<ChunkCache>, Arc<CachedStore>) {
        let data: Bytes = (0..size)
            .map(|i| (i * seed + i / 4096) as u8)
            .collect::<Vec<u8>>()
            .into();
        let sent = Arc::new(AtomicU64::new(0));
        let inner: Arc<dyn BlockStore> = Arc::new(SlowLink {
            data: data.clone(),
            sent: Arc::clone(&sent),
        });
        let settings = CacheSettings {
            dir: None,
            max_disk_bytes: 0,
            memory_bytes: 4 << 20,
            chunk_size: CHUNK,
            readahead: 16,
            max_fetch: 1 << 20,
            cut_bytes: 0,
            background: BackgroundSettings {
                gets: 4,
                gets_per_image: 4,
                bytes_per_sec: 0,
                image_bytes_per_sec: 0,
                whole_image_max: 1 << 30,
            },
            ..CacheSettings::default()
        };
        let cache = ChunkCache::new(settings, Handle::current());
        let store = CachedStore::open(inner, &format!("etag-{seed}"), Arc::clone(&cache), None);
        (data, sent, cache, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_far_down_a_stream_is_served_first_and_nothing_is_fetched_twice() {
        let size = 64 * CHUNK;
        let (data, sent, cache, store) = slow_image(size, 13);
        // Opening starts the whole image in the background (configured): the last
        // chunk, then the rest in one streamed run beside the reader's own chunk.
        let first = store.read_at(0, 512).wait().await.unwrap();
        assert_eq!(first, data.slice(0..512));
        // Chunk 30 is some 29 chunks down the stream: 580 ms away by it.
        let t = Instant::now();
        let far = store
            .read_at(30 * CHUNK as u64 + 100, 1000)
            .wait()
            .await
            .unwrap();
        let waited = t.elapsed();
        assert_eq!(far, data.slice(30 * CHUNK + 100..30 * CHUNK + 1100));
        assert!(
            waited < Duration::from_millis(200),
            "the reader waited {waited:?} for a chunk it cut the stream for"
        );
        assert!(cache.stats.demand_cuts.load(Ordering::SeqCst) >= 1);
        // Everything arrives, right, once: a cut wastes at most the piece in flight.
        let all = store.read_at(0, size).wait().await.unwrap();
        assert_eq!(all, data);
        let fetched = sent.load(Ordering::SeqCst);
        assert!(
            fetched <= size as u64 + CHUNK as u64,
            "{fetched} bytes crossed the link for an image of {size}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sequential_reader_with_parallel_requests_never_cuts() {
        let size = 64 * CHUNK;
        let (data, sent, cache, store) = slow_image(size, 5);
        // Eight requests of one chunk in flight at a time, in order, to the end.
        let mut next = 0;
        let mut inflight = futures::stream::FuturesOrdered::new();
        while next < 64 || !inflight.is_empty() {
            while next < 64 && inflight.len() < 8 {
                let s = Arc::clone(&store);
                let at = next * CHUNK;
                inflight.push_back(async move { (at, s.read_at(at as u64, CHUNK).wait().await) });
                next += 1;
            }
            if let Some((at, r)) = inflight.next().await {
                assert_eq!(r.unwrap(), data.slice(at..at + CHUNK));
            }
        }
        assert_eq!(cache.stats.demand_cuts.load(Ordering::SeqCst), 0);
        assert_eq!(sent.load(Ordering::SeqCst), size as u64);
    }
}
