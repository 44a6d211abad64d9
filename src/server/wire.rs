//! The send side of one connection. The connection task queues the frames its
//! connection machine transmits (already framed: digests and padding included) and a
//! writer task of their own puts them on the socket as vectored writes of header,
//! payload slice and tail, never copying a payload, so a peer that stops reading
//! never stops the connection's timers (NOP-In, idle), reinstatement or shutdown.
//! The connection task stops reading commands while the backlog is above a high
//! water mark (what a peer can make us buffer stays bounded), and a write that makes
//! no progress for the configured time ends the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use smallvec::SmallVec;

use super::ServeStats;
use crate::pdu::Frame;

/// Above this backlog the connection reads no more commands; below the low mark it
/// reads again. Data-In payloads are slices of the image or of cached chunks, so the
/// backlog is mostly references, not copies.
pub const HIGH_WATER: usize = 8 << 20;
const LOW_WATER: usize = 2 << 20;

/// Frames written per vectored batch before the queue is looked at again.
const BATCH: usize = 64;

#[derive(Default)]
struct Queue {
    items: VecDeque<Frame>,
    bytes: usize,
    finishing: bool,
}

/// Frames waiting for the writer task.
#[derive(Default)]
pub struct Wire {
    queue: Mutex<Queue>,
    work: Notify,
    room: Notify,
}

/// Slices per vectored write (well under IOV_MAX): three per frame.
const MAX_SLICES: usize = 3 * 21;

/// Write every frame of `frames` (left empty) with vectored writes; returns the bytes
/// written. The slice list lives on the stack: a write allocates nothing.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &mut VecDeque<Frame>,
) -> io::Result<u64> {
    let mut total = 0u64;
    while !frames.is_empty() {
        let n = frames.len().min(MAX_SLICES / 3);
        {
            let mut slices: SmallVec<[IoSlice<'_>; MAX_SLICES]> = SmallVec::new();
            for f in frames.iter().take(n) {
                for part in [f.head(), &f.data[..], f.tail()] {
                    if !part.is_empty() {
                        slices.push(IoSlice::new(part));
                    }
                }
            }
            let mut bufs: &mut [IoSlice<'_>] = &mut slices;
            while !bufs.is_empty() {
                let written = w.write_vectored(bufs).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                total += written as u64;
                IoSlice::advance_slices(&mut bufs, written);
            }
        }
        frames.drain(..n);
    }
    w.flush().await?;
    Ok(total)
}

impl Wire {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue every frame of `frames` (left empty, its capacity kept).
    pub fn send(&self, frames: &mut VecDeque<Frame>) {
        if frames.is_empty() {
            return;
        }
        let mut q = self.lock();
        for f in frames.drain(..) {
            q.bytes += f.wire_len();
            q.items.push_back(f);
        }
        drop(q);
        self.work.notify_one();
    }

    /// Write what is queued, then shut the socket down.
    pub fn finish(&self) {
        self.lock().finishing = true;
        self.work.notify_one();
    }

    pub fn has_room(&self) -> bool {
        self.lock().bytes < HIGH_WATER
    }

    /// Wakes once the writer has brought the backlog under the low water mark
    /// (possibly spuriously: check `has_room` again).
    pub async fn room(&self) {
        self.room.notified().await
    }

    /// The writer task: returns when finished, or with the error that ended it.
    pub async fn write_loop<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        wr: W,
        stall: Duration,
        stats: Arc<ServeStats>,
    ) -> io::Result<()> {
        let mut wr = Stalled::new(wr, stall);
        let mut batch: VecDeque<Frame> = VecDeque::with_capacity(BATCH);
        loop {
            let finishing = {
                let mut q = self.lock();
                let n = q.items.len().min(BATCH);
                batch.extend(q.items.drain(..n));
                q.finishing && q.items.is_empty()
            };
            if !batch.is_empty() {
                let sent: usize = batch.iter().map(Frame::wire_len).sum();
                let n = write_frames(&mut wr, &mut batch).await?;
                stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
                let mut q = self.lock();
                q.bytes = q.bytes.saturating_sub(sent);
                if q.bytes < LOW_WATER {
                    self.room.notify_one();
                }
            }
            if finishing {
                return wr.shutdown().await;
            }
            if self.lock().items.is_empty() {
                self.work.notified().await;
            }
        }
    }
}

/// An `AsyncWrite` that fails with `TimedOut` when the writer underneath makes no
/// progress for `stall`.
struct Stalled<W> {
    inner: W,
    stall: Duration,
    deadline: Pin<Box<Sleep>>,
    waiting: bool,
}

impl<W> Stalled<W> {
    fn new(inner: W, stall: Duration) -> Stalled<W> {
        Stalled {
            inner,
            stall,
            deadline: Box::pin(tokio::time::sleep(stall)),
            waiting: false,
        }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    self.deadline.as_mut().reset(Instant::now() + self.stall);
                }
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no write progress for {} s", self.stall.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Stalled<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{FrameConfig, Header, NopIn, RESERVED_TAG};
    use tokio::io::AsyncReadExt;

    fn nop(data: usize) -> Frame {
        nop_framed(data, &FrameConfig::LOGIN)
    }

    fn nop_framed(data: usize, cfg: &FrameConfig) -> Frame {
        let h = Header::NopIn(NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt: 1,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
        });
        Frame::new(&h, bytes::Bytes::from(vec![0u8; data]), cfg)
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_times_the_writer_out() {
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        let wire = Arc::new(Wire::default());
        let started = Instant::now();
        let task = tokio::spawn(Arc::clone(&wire).write_loop(
            ours,
            Duration::from_secs(1),
            Arc::default(),
        ));
        let mut frames: VecDeque<Frame> = (0..4).map(|_| nop(60_000)).collect();
        wire.send(&mut frames);
        // Some of it fits the pipe; then nothing moves.
        let mut buf = vec![0u8; 1000];
        theirs.read_exact(&mut buf).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            wire.lock().bytes > 0,
            "what was not written is still counted"
        );
    }

    #[tokio::test]
    async fn frames_go_out_in_order_with_their_framing_then_finish() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let wire = Arc::new(Wire::default());
        let task = tokio::spawn(Arc::clone(&wire).write_loop(
            ours,
            Duration::from_secs(5),
            Arc::default(),
        ));
        wire.send(&mut VecDeque::from([nop(4)]));
        let digests = FrameConfig {
            header_digest: true,
            data_digest: false,
            max_data_segment: 8192,
        };
        wire.send(&mut VecDeque::from([nop_framed(4, &digests)]));
        wire.finish();
        task.await.unwrap().unwrap();
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).await.unwrap();
        // 48 + 4 before the switch; 48 + 4 (header digest) + 4 after it.
        assert_eq!(all.len(), 52 + 56);
        assert!(wire.has_room());
    }
}
