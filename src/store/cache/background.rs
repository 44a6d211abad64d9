//! Background fetching: chunks nobody waits for yet (a boot profile's, a whole image
//! where configured), fetched in a given order within a budget of concurrent GETs and
//! bytes per second, for the worker and for each image. Demand reads never wait for
//! the budget: they take the S3 client's permits directly, while background fetching
//! holds at most its own few, in runs small enough that a demand read sharing the link
//! with one waits for little (and cuts it where it waits for a chunk down the run).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::debug;

use super::lock;
use super::CachedStore;

/// The largest background GET of a boot profile: at 100 MB/s, 40 ms of the link.
pub(super) const RUN_BYTES: u64 = 4 << 20;

/// Concurrent GETs and a rate, shared by whatever fetches under it.
#[derive(Debug)]
pub(super) struct Budget {
    gets: Arc<Semaphore>,
    /// Bytes per second (0: no bound) and when the next byte may start.
    rate: u64,
    next: Mutex<Option<Instant>>,
}

impl Budget {
    pub(super) fn new(gets: usize, rate: u64) -> Budget {
        Budget {
            gets: Arc::new(Semaphore::new(gets.max(1))),
            rate,
            next: Mutex::new(None),
        }
    }

    /// Take one GET and book `bytes` of the rate: the permit, and how long to wait
    /// before sending.
    async fn take(&self, bytes: u64) -> Option<(OwnedSemaphorePermit, Duration)> {
        let permit = Arc::clone(&self.gets).acquire_owned().await.ok()?;
        if self.rate == 0 {
            return Some((permit, Duration::ZERO));
        }
        let now = Instant::now();
        let mut next = lock(&self.next);
        let start = next.map_or(now, |n| n.max(now));
        *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.rate as f64));
        Some((permit, start - now))
    }
}

/// Fetch `order`'s chunks of `store` that are nowhere yet, in that order, in runs of
/// consecutive chunks of at most `run_bytes`, within the image's and the worker's
/// budgets; ends when done or when the store is dropped (the image left).
pub(super) async fn prefetch(
    store: Weak<CachedStore>,
    order: Vec<u64>,
    run_bytes: u64,
    why: &'static str,
) {
    let mut i = 0;
    let mut runs = 0u64;
    while i < order.len() {
        let Some(s) = store.upgrade() else {
            return;
        };
        let cs = s.cache.settings.chunk_size as u64;
        let per_run = (run_bytes / cs).max(1) as usize;
        let from = order[i];
        let mut to = from + 1;
        i += 1;
        while i < order.len() && order[i] == to && ((to - from) as usize) < per_run {
            to += 1;
            i += 1;
        }
        if s.all_present(from, to) {
            continue;
        }
        let bytes = (to - from) * cs;
        let (image_budget, worker_budget) = (Arc::clone(&s.budget), Arc::clone(&s.cache.budget));
        drop(s);
        let (Some((p1, w1)), Some((p2, w2))) = (
            image_budget.take(bytes).await,
            worker_budget.take(bytes).await,
        ) else {
            return;
        };
        tokio::time::sleep(w1.max(w2)).await;
        let Some(s) = store.upgrade() else {
            return;
        };
        let fills = s.fetch_chunks(from, to);
        drop(s);
        runs += 1;
        // The permits go back when the run is in.
        tokio::spawn(async move {
            let _ = futures::future::join_all(fills).await;
            drop((p1, p2));
        });
    }
    debug!(why, runs, "background prefetch done");
}
