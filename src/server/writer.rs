//! The send path: queued frames become one vectored write of headers (with their
//! digests), payload slices straight from the image or cache, and padding. Buffers are
//! reused between flushes; payloads are never copied.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::pdu::framing::{data_digest, digest_bytes};
use crate::pdu::{pad_len, FrameConfig};
use crate::session::Frame;

static ZEROS: [u8; 3] = [0; 3];

/// Slices per vectored write (well under IOV_MAX).
const MAX_SLICES: usize = 64;

enum Part {
    Meta(Range<usize>),
    Data(Bytes),
    Pad(usize),
}

#[derive(Default)]
pub struct Writer {
    meta: Vec<u8>,
    parts: Vec<Part>,
}

impl Writer {
    /// Write every queued frame; returns the bytes written.
    pub async fn flush<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        frames: &mut VecDeque<Frame>,
        cfg: FrameConfig,
    ) -> std::io::Result<u64> {
        let mut total = 0u64;
        while !frames.is_empty() {
            self.meta.clear();
            self.parts.clear();
            // Four parts per frame at most; the slice list lives on the stack, so a
            // flush allocates nothing.
            while self.parts.len() + 4 <= MAX_SLICES {
                let Some(f) = frames.pop_front() else { break };
                self.add(f, cfg);
            }
            let mut slices: SmallVec<[IoSlice<'_>; MAX_SLICES]> = self
                .parts
                .iter()
                .map(|p| match p {
                    Part::Meta(r) => IoSlice::new(&self.meta[r.clone()]),
                    Part::Data(b) => IoSlice::new(b),
                    Part::Pad(n) => IoSlice::new(&ZEROS[..*n]),
                })
                .collect();
            let mut bufs: &mut [IoSlice<'_>] = &mut slices;
            while !bufs.is_empty() {
                let written = w.write_vectored(bufs).await?;
                if written == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                total += written as u64;
                IoSlice::advance_slices(&mut bufs, written);
            }
        }
        w.flush().await?;
        Ok(total)
    }

    fn add(&mut self, f: Frame, cfg: FrameConfig) {
        let start = self.meta.len();
        self.meta.extend_from_slice(&f.bhs);
        if cfg.header_digest {
            self.meta
                .extend_from_slice(&digest_bytes(crc32c::crc32c(&f.bhs)));
        }
        self.parts.push(Part::Meta(start..self.meta.len()));
        if f.data.is_empty() {
            return;
        }
        let pad = pad_len(f.data.len());
        let digest = cfg.data_digest.then(|| data_digest(&f.data));
        self.parts.push(Part::Data(f.data));
        if pad > 0 {
            self.parts.push(Part::Pad(pad));
        }
        if let Some(d) = digest {
            let s = self.meta.len();
            self.meta.extend_from_slice(&digest_bytes(d));
            self.parts.push(Part::Meta(s..self.meta.len()));
        }
    }
}
