//! Fetching chunks: single flight (concurrent misses on one chunk share one fetch,
//! found in the in-flight map) and runs of missing chunks fetched with one streamed
//! GET (read-ahead), each chunk handed over as soon as its last byte arrives. Every
//! task runs on the cache's own runtime handle.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::chunk::ChunkKey;
use super::priority::RunControl;
use super::{lock, ChunkCache};
use crate::store::{BlockStore, StoreError};

/// How a run of missing chunks is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetch {
    /// One GET of the whole range, within the store's deadline (a demand read: a
    /// reader waits for all of it, and a stalled S3 must fail it in time).
    Whole,
    /// One streamed GET, each chunk handed over as it arrives, cut by readers that
    /// wait further down (read-ahead and background runs).
    Stream,
}

/// A chunk on its way: shared by every reader that wants it.
pub type Fill = Shared<BoxFuture<'static, Result<Bytes, StoreError>>>;

type RunSender = tokio::sync::oneshot::Sender<Result<Bytes, StoreError>>;

/// Reads of one chunk whose bytes fail the store's check (its digest index) before
/// the reader is told MEDIUM ERROR.
const VERIFY_ATTEMPTS: u32 = 3;

/// One chunk from `inner`, checked by it ([`BlockStore::verify`]); bytes that fail
/// the check are fetched again, and never returned.
async fn fetch_verified(
    inner: &dyn BlockStore,
    offset: u64,
    len: usize,
) -> Result<Bytes, StoreError> {
    let mut last = None;
    for _ in 0..VERIFY_ATTEMPTS {
        let data = inner.read_at(offset, len).wait().await?;
        match inner.verify(offset, &data) {
            Ok(()) => return Ok(data),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Corrupt(format!("chunk at {offset}"))))
}

/// A streamed read-ahead that delivers nothing for this long falls back to
/// per-chunk GETs, which have their own deadline.
const STREAM_STALL: std::time::Duration = std::time::Duration::from_secs(20);

impl ChunkCache {
    /// One chunk, from memory, disk, or `inner` (single-flight).
    pub(super) fn chunk(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        key: ChunkKey,
        len: usize,
    ) -> Fill {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&key) {
            let f = f.clone();
            drop(inflight);
            self.demand(&key);
            return f;
        }
        let cache = Arc::clone(self);
        let inner = Arc::clone(inner);
        let k = key.clone();
        let fill: Fill = async move {
            let r = cache.fill(&inner, &k, len).await;
            lock(&cache.inflight).remove(&k);
            r
        }
        .boxed()
        .shared();
        inflight.insert(key, fill.clone());
        fill
    }

    pub(super) async fn fill(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        key: &ChunkKey,
        len: usize,
    ) -> Result<Bytes, StoreError> {
        if let Some(b) = self.mem_get(key) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        if self.disk.is_some() {
            let cache = Arc::clone(self);
            let k = key.clone();
            let found = self
                .runtime
                .spawn_blocking(move || cache.disk.as_ref().and_then(|d| d.read(&k, &cache.stats)))
                .await
                .ok()
                .flatten();
            if let Some(b) = found.filter(|b| b.len() == len) {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                lock(&self.mem).put(key.clone(), b.clone());
                return Ok(b);
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let offset = key.index * self.settings.chunk_size as u64;
        let data = fetch_verified(inner.as_ref(), offset, len).await?;
        self.stats
            .fetched_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.keep(key, &data);
        Ok(data)
    }

    /// Start fetching the chunks `keys` (consecutive, starting at byte `offset`) that
    /// are nowhere yet (not in memory, on disk or in flight), with one GET per run of
    /// at most `max_fetch` bytes; each chunk is single-flight like any other. The
    /// fetches run as tasks of the cache's runtime.
    pub(super) fn fetch_runs(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        keys: Vec<(ChunkKey, usize)>,
        mut offset: u64,
        how: Fetch,
    ) {
        let mut inflight = lock(&self.inflight);
        let mut run: Vec<(ChunkKey, usize)> = Vec::new();
        let (mut run_start, mut run_len) = (offset, 0);
        for (key, len) in keys {
            let absent = !inflight.contains_key(&key)
                && self.mem_get(&key).is_none()
                && !self.disk.as_ref().is_some_and(|d| d.contains(&key));
            if !absent || run_len + len > self.settings.max_fetch.max(len) {
                self.start_run(
                    inner,
                    std::mem::take(&mut run),
                    run_start,
                    &mut inflight,
                    how,
                );
                run_len = 0;
            }
            if absent {
                if run.is_empty() {
                    run_start = offset;
                }
                run.push((key, len));
                run_len += len;
            }
            offset += len as u64;
        }
        self.start_run(inner, run, run_start, &mut inflight, how);
    }

    pub(super) fn start_run(
        self: &Arc<Self>,
        inner: &Arc<dyn BlockStore>,
        run: Vec<(ChunkKey, usize)>,
        offset: u64,
        inflight: &mut HashMap<ChunkKey, Fill>,
        how: Fetch,
    ) {
        if run.is_empty() {
            return;
        }
        let mut senders = Vec::with_capacity(run.len());
        for (key, _) in &run {
            let (tx, rx) = tokio::sync::oneshot::channel::<Result<Bytes, StoreError>>();
            senders.push(Some(tx));
            let (cache, k) = (Arc::clone(self), key.clone());
            let fill: Fill = async move {
                let r = rx.await.unwrap_or_else(|_| {
                    Err(StoreError::Unavailable("read-ahead abandoned".into()))
                });
                lock(&cache.inflight).remove(&k);
                r
            }
            .boxed()
            .shared();
            inflight.insert(key.clone(), fill.clone());
            // Polled once by itself, so the in-flight entry goes whoever reads it.
            self.runtime.spawn(fill);
        }
        self.stats
            .misses
            .fetch_add(run.len() as u64, Ordering::Relaxed);
        if how == Fetch::Whole {
            let (cache, inner) = (Arc::clone(self), Arc::clone(inner));
            self.runtime
                .spawn(async move { cache.fetch_whole(inner, run, offset, senders).await });
            return;
        }
        let ctl = self.register_run(&run, 0);
        let (cache, inner) = (Arc::clone(self), Arc::clone(inner));
        self.runtime
            .spawn(async move { cache.fetch_run(inner, run, offset, senders, ctl).await });
    }

    /// Fetch a run of chunks with one streamed GET, handing each chunk over as soon
    /// as its last byte arrives; what the stream fails to deliver is fetched chunk by
    /// chunk (with the store's retries). A reader waiting for a chunk further down
    /// cuts the stream (priority.rs): that chunk comes alone, first, then the rest.
    pub(super) fn fetch_run(
        self: Arc<Self>,
        inner: Arc<dyn BlockStore>,
        mut run: Vec<(ChunkKey, usize)>,
        offset: u64,
        mut senders: Vec<Option<RunSender>>,
        ctl: Arc<RunControl>,
    ) -> BoxFuture<'static, ()> {
        // Boxed as Send by name: a cut spawns this function again.
        async move {
            let total: usize = run.iter().map(|(_, l)| l).sum();
            let mut done = 0;
            let mut cut = None;
            if let Some(open) = inner.read_stream(offset, total) {
                if let Ok(mut body) = open.await {
                    let mut buf = BytesMut::with_capacity(run[0].1);
                    'body: while done < run.len() {
                        let next = tokio::select! {
                            biased;
                            _ = ctl.wake.notified() => {
                                cut = ctl.cut_at(done);
                                if cut.is_some() {
                                    break 'body;
                                }
                                continue 'body;
                            }
                            next = tokio::time::timeout(STREAM_STALL, body.next()) => next,
                        };
                        let Ok(Some(Ok(mut piece))) = next else {
                            break;
                        };
                        while !piece.is_empty() {
                            let want = run[done].1 - buf.len();
                            buf.extend_from_slice(&piece.split_to(want.min(piece.len())));
                            if buf.len() == run[done].1 {
                                let data = buf.split().freeze();
                                let at = offset
                                    + run[..done].iter().map(|(_, l)| *l as u64).sum::<u64>();
                                if inner.verify(at, &data).is_err() {
                                    // Fetched again below, chunk by chunk, verified.
                                    break 'body;
                                }
                                self.deliver(&run[done].0, Ok(data), &mut senders[done]);
                                done += 1;
                                ctl.delivered(done);
                                if done == run.len() {
                                    break 'body;
                                }
                                buf.reserve(run[done].1);
                            }
                        }
                    }
                }
            }
            self.unregister_run(&run, &ctl);
            if let Some(c) = cut {
                // The chunk a reader waits for comes alone and first; read-ahead then
                // resumes after it and, beside that, fills the gap the stream left
                // before it. Both are registered now, so readers can cut them too.
                let start =
                    |i: usize| offset + run[..i].iter().map(|(_, l)| *l as u64).sum::<u64>();
                let (before_at, at, after_at) = (start(done), start(c), start(c + 1));
                let after_senders = senders.split_off(c + 1);
                let after = run.split_off(c + 1);
                let (wanted, mut wanted_sender) = (run.pop(), senders.pop().flatten());
                let before = run.split_off(done);
                let before_senders = senders.split_off(done);
                let parts: Vec<_> = [
                    (after, after_senders, after_at, ctl.demanded_from(c + 1)),
                    (before, before_senders, before_at, ctl.demanded_from(done)),
                ]
                .into_iter()
                .filter(|(p, _, _, _)| !p.is_empty())
                .map(|(p, s, a, demanded)| {
                    let ctl = self.register_run(&p, demanded);
                    (p, s, a, ctl)
                })
                .collect();
                if let Some((key, len)) = wanted {
                    let r = fetch_verified(inner.as_ref(), at, len).await;
                    self.deliver(&key, r, &mut wanted_sender);
                }
                for (p, s, a, ctl) in parts {
                    let (cache, inner) = (Arc::clone(&self), Arc::clone(&inner));
                    self.runtime
                        .spawn(async move { cache.fetch_run(inner, p, a, s, ctl).await });
                }
                return;
            }
            // What the stream did not deliver: one GET per chunk, all at once (the store
            // bounds how many run), each handed over as it completes.
            let mut at = offset;
            let mut rest = FuturesUnordered::new();
            for (i, (_, len)) in run.iter().enumerate() {
                if i >= done {
                    let (inner, start, len) = (Arc::clone(&inner), at, *len);
                    rest.push(async move { (i, fetch_verified(inner.as_ref(), start, len).await) });
                }
                at += *len as u64;
            }
            while let Some((i, r)) = rest.next().await {
                self.deliver(&run[i].0, r, &mut senders[i]);
            }
        }
        .boxed()
    }

    /// Fetch a run of chunks with one GET of the whole range, with the store's
    /// retries and deadline, and hand each chunk over (a slice of the answer).
    async fn fetch_whole(
        self: Arc<Self>,
        inner: Arc<dyn BlockStore>,
        run: Vec<(ChunkKey, usize)>,
        offset: u64,
        mut senders: Vec<Option<RunSender>>,
    ) {
        let total: usize = run.iter().map(|(_, l)| l).sum();
        match fetch_verified(inner.as_ref(), offset, total).await {
            Ok(data) => {
                let mut at = 0;
                for ((key, len), to) in run.iter().zip(senders.iter_mut()) {
                    self.deliver(key, Ok(data.slice(at..at + len)), to);
                    at += len;
                }
            }
            Err(e) => {
                for ((key, _), to) in run.iter().zip(senders.iter_mut()) {
                    self.deliver(key, Err(e.clone()), to);
                }
            }
        }
    }

    pub(super) fn deliver(
        &self,
        key: &ChunkKey,
        r: Result<Bytes, StoreError>,
        to: &mut Option<RunSender>,
    ) {
        if let Ok(d) = &r {
            self.stats
                .fetched_bytes
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            self.keep(key, d);
        }
        if let Some(tx) = to.take() {
            let _ = tx.send(r);
        }
    }
}
