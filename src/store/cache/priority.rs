//! Demand reads before read-ahead. A streamed read-ahead delivers its chunks in
//! order; a reader that needs a chunk far down such a stream (a booting node jumps
//! about its root filesystem) would wait for every chunk before it, at the shared
//! bandwidth. Instead the reader cuts the stream there: the chunk it needs is fetched
//! alone, first, with the whole bandwidth, and read-ahead resumes afterwards with the
//! rest. No chunk is fetched twice; a cut costs one request and the bytes the stream
//! had in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::chunk::ChunkKey;
use super::{lock, ChunkCache};

/// A reader waits for the chunk arriving now and the one after it rather than cut:
/// a cut costs a request's latency, which one chunk's transfer time exceeds.
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
    pub(super) wake: Notify,
}

impl RunControl {
    pub(super) fn new(first: u64) -> RunControl {
        RunControl {
            first,
            delivered: AtomicUsize::new(0),
            cut: AtomicUsize::new(usize::MAX),
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
}

impl ChunkCache {
    /// Register the chunks of a run to be streamed, so readers can find and cut it
    /// (before it starts, too).
    pub(super) fn register_run(&self, run: &[(ChunkKey, usize)]) -> Arc<RunControl> {
        let ctl = Arc::new(RunControl::new(run.first().map_or(0, |(k, _)| k.index)));
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
        if pos >= ctl.delivered.load(Ordering::Relaxed) + WORTH_A_CUT {
            self.stats.demand_cuts.fetch_add(1, Ordering::Relaxed);
            ctl.cut.fetch_min(pos, Ordering::Relaxed);
            ctl.wake.notify_one();
        }
    }
}
