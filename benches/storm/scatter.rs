//! A boot-like scattered trace at site size, and an image to replay it on: what a
//! booting node reads of a big root image (the superblock, the tables at the end, then
//! a few hundred files in no particular order, each read front to back in 128 KiB
//! requests, four in flight after the first, as the kernel's read-ahead does), with
//! the image written sparse: pseudo-random bytes where the trace reads, holes
//! elsewhere, so a 22 GB image costs its touched bytes on the local disk (its S3
//! copy is whole).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;

use crate::trace::{Read, Trace};

/// What to generate.
pub struct Scatter {
    pub image_bytes: u64,
    pub files: u32,
    /// Bytes the files add up to (about).
    pub file_bytes: u64,
    pub seed: u64,
}

/// splitmix64: a fixed, seedable sequence (benchmarks must be repeatable).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Log-uniform between `lo` and `hi`: many small files, a few large ones.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (lo.ln() + u * (hi.ln() - lo.ln())).exp()
    }
}

const REQUEST: u64 = 128 << 10;
const IN_FLIGHT: usize = 4;
/// A warm target's time per request and the boot's time between files (the trace's
/// own timing; replay keeps only its causality and think times).
const SERVICE_US: u64 = 400;
const THINK_US: u64 = 300;

impl Scatter {
    pub fn trace(&self) -> Trace {
        let mut rng = Rng(self.seed);
        let n = self.image_bytes;
        let tail = (4u64 << 20).min(n / 64) / 4096 * 4096;
        // File sizes, scaled to add up to file_bytes.
        let raw: Vec<f64> = (0..self.files)
            .map(|_| rng.log_uniform(4096.0, 8.0 * 1048576.0))
            .collect();
        let scale = self.file_bytes as f64 / raw.iter().sum::<f64>();
        let mut extents: Vec<(u64, u64)> = vec![(0, 4096), (n - tail, tail)];
        for r in raw {
            let len = ((r * scale) as u64).clamp(4096, n / 8).div_ceil(4096) * 4096;
            let at = rng.below((n - tail - len) / 4096) * 4096;
            extents.push((at, len));
        }
        let mut t = Trace {
            image_bytes: n,
            reads: Vec::new(),
        };
        let mut now = 0;
        for (at, len) in extents {
            let requests: Vec<(u64, u64)> = (0..len.div_ceil(REQUEST))
                .map(|i| (at + i * REQUEST, REQUEST.min(len - i * REQUEST)))
                .collect();
            // The first request alone (the kernel has to see the file read), then
            // bursts of IN_FLIGHT.
            let (head, rest) = requests.split_at(1);
            for burst in std::iter::once(head).chain(rest.chunks(IN_FLIGHT)) {
                for (off, l) in burst {
                    t.reads.push(Read {
                        issue_us: now,
                        done_us: now + SERVICE_US,
                        lba: off / 512,
                        blocks: (l / 512) as u32,
                    });
                }
                now += SERVICE_US + 1;
            }
            now += THINK_US;
        }
        t
    }
}

/// A whole-image read: the first `bytes` of an image front to back in 1 MiB requests,
/// eight in flight (what `dd` or `qemu-img convert` does).
pub fn sequential(image_bytes: u64, bytes: u64) -> Trace {
    const REQ: u64 = 1 << 20;
    let end = bytes.min(image_bytes) / REQ * REQ;
    let mut t = Trace {
        image_bytes,
        reads: Vec::new(),
    };
    for (k, at) in (0..end).step_by(REQ as usize).enumerate() {
        // Request k waits for request k - 8: a window of eight.
        let issue_us = (k as u64 / 8) * (SERVICE_US + 1);
        t.reads.push(Read {
            issue_us,
            done_us: issue_us + SERVICE_US,
            lba: at / 512,
            blocks: (REQ / 512) as u32,
        });
    }
    t
}

/// Write `trace`'s image sparse at `path`: the bytes of every read, holes elsewhere.
pub fn write_image(trace: &Trace, path: &Path, seed: u64) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(trace.image_bytes)?;
    let mut rng = Rng(seed ^ 0x5eed);
    for r in &trace.reads {
        let len = r.blocks as usize * 512;
        let bytes: Vec<u8> = (0..len.div_ceil(8))
            .flat_map(|_| rng.next().to_le_bytes())
            .take(len)
            .collect();
        f.seek(SeekFrom::Start(r.lba * 512))?;
        f.write_all(&bytes)?;
    }
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scattered_trace_reads_what_it_says_where_it_says() {
        let s = Scatter {
            image_bytes: 8 << 30,
            files: 200,
            file_bytes: 110_000_000,
            seed: 7,
        };
        let t = s.trace();
        assert_eq!(t, s.trace(), "repeatable");
        let touched = t.unique_bytes();
        assert!(touched > 100_000_000 && touched < 130_000_000, "{touched}");
        assert!(t.extent() <= 8 << 30);
        assert_eq!(t.reads[0].lba, 0);
        let back = Trace::parse(&t.encode()).unwrap();
        assert_eq!(back, t);
    }
}
