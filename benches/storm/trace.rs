//! Boot read traces: the READ commands one node issued while booting, with when each
//! was issued and completed, as recorded by `s3lun-storm record` between a real
//! kernel and the target. Text, one command per line, so a trace is reviewable and
//! diffable in the repository:
//!
//! ```text
//! # s3lun boot trace v1
//! # image_bytes 268435456
//! # issue_us done_us lba blocks
//! 0 830 0 8
//! ```
//!
//! Replay keeps the trace's causality rather than its wall clock: a command waits for
//! the last command that had completed when it was recorded, then for the same think
//! time; commands recorded in one burst (read-ahead) stay one burst. A slower target
//! thus delays later reads, as it would delay a real boot.

use std::fmt::Write as _;

use anyhow::{bail, Context};

/// One recorded READ: 512-byte blocks, microseconds from the first command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub issue_us: u64,
    pub done_us: u64,
    pub lba: u64,
    pub blocks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// Size of the image the trace was recorded on (0: unknown).
    pub image_bytes: u64,
    pub reads: Vec<Read>,
}

/// When replay may issue command `i`: after command `after` completed (None: from the
/// node's start) plus `think_us`, and not before the previous command was issued
/// plus `burst_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after: Option<usize>,
    pub think_us: u64,
    pub burst_us: u64,
}

impl Trace {
    pub fn parse(text: &str) -> anyhow::Result<Trace> {
        let mut t = Trace::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(c) = line.strip_prefix('#') {
                let mut w = c.split_whitespace();
                if w.next() == Some("image_bytes") {
                    t.image_bytes = w
                        .next()
                        .and_then(|v| v.parse().ok())
                        .with_context(|| format!("line {}: bad image_bytes", n + 1))?;
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let v: Vec<u64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("line {}: not four numbers: {line:?}", n + 1))?;
            let [issue_us, done_us, lba, blocks] = v[..] else {
                bail!("line {}: want issue_us done_us lba blocks: {line:?}", n + 1);
            };
            if done_us < issue_us || blocks == 0 || blocks > u16::MAX as u64 {
                bail!("line {}: impossible read {line:?}", n + 1);
            }
            t.reads.push(Read {
                issue_us,
                done_us,
                lba,
                blocks: blocks as u32,
            });
        }
        if t.reads.is_empty() {
            bail!("the trace holds no reads");
        }
        if t.reads.windows(2).any(|w| w[1].issue_us < w[0].issue_us) {
            bail!("the trace's reads are not in issue order");
        }
        Ok(t)
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("# s3lun boot trace v1\n");
        let _ = writeln!(s, "# image_bytes {}", self.image_bytes);
        s.push_str("# issue_us done_us lba blocks\n");
        for r in &self.reads {
            let _ = writeln!(s, "{} {} {} {}", r.issue_us, r.done_us, r.lba, r.blocks);
        }
        s
    }

    /// The replay schedule, one step per read.
    pub fn steps(&self) -> Vec<Step> {
        let mut by_done: Vec<usize> = (0..self.reads.len()).collect();
        by_done.sort_by_key(|&i| self.reads[i].done_us);
        let mut steps = Vec::with_capacity(self.reads.len());
        let mut k = 0; // reads in by_done[..k] completed before the current issue
        let mut last_done: Option<usize> = None;
        for (i, r) in self.reads.iter().enumerate() {
            while k < by_done.len() && self.reads[by_done[k]].done_us <= r.issue_us {
                // Only a read issued before this one can have made it wait.
                if by_done[k] < i {
                    last_done = Some(by_done[k]);
                }
                k += 1;
            }
            let think_us = match last_done {
                Some(j) => r.issue_us - self.reads[j].done_us,
                None => r.issue_us,
            };
            let burst_us = if i == 0 {
                0
            } else {
                r.issue_us - self.reads[i - 1].issue_us
            };
            steps.push(Step {
                after: last_done,
                think_us,
                burst_us,
            });
        }
        steps
    }

    /// Bytes the trace touches at least once (overlaps counted once).
    pub fn unique_bytes(&self) -> u64 {
        let mut spans: Vec<(u64, u64)> = self
            .reads
            .iter()
            .map(|r| (r.lba * 512, (r.lba + r.blocks as u64) * 512))
            .collect();
        spans.sort_unstable();
        let mut total = 0;
        let mut cur: Option<(u64, u64)> = None;
        for (s, e) in spans {
            cur = match cur {
                Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
                Some((cs, ce)) => {
                    total += ce - cs;
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        total + cur.map_or(0, |(s, e)| e - s)
    }

    /// Round trips a cold replay cannot avoid: groups of reads that wait for the
    /// same earlier read (one burst) and touch a 4 KiB block no earlier read did.
    pub fn dependent_misses(&self) -> u64 {
        let steps = self.steps();
        let mut seen = std::collections::HashSet::new();
        let mut misses = 0;
        let mut group = None;
        let mut counted = false;
        for (r, s) in self.reads.iter().zip(&steps) {
            if group != Some(s.after) || s.burst_us > 0 && s.after.is_none() {
                group = Some(s.after);
                counted = false;
            }
            let (first, last) = (r.lba / 8, (r.lba + r.blocks as u64 - 1) / 8);
            let new = (first..=last).fold(false, |n, b| seen.insert(b) | n);
            if new && !counted {
                misses += 1;
                counted = true;
            }
        }
        misses
    }

    pub fn bytes_read(&self) -> u64 {
        self.reads.iter().map(|r| r.blocks as u64 * 512).sum()
    }

    /// The end of the furthest read, in bytes.
    pub fn extent(&self) -> u64 {
        self.reads
            .iter()
            .map(|r| (r.lba + r.blocks as u64) * 512)
            .max()
            .unwrap_or(0)
    }

    pub fn duration_us(&self) -> u64 {
        self.reads.iter().map(|r| r.done_us).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(issue_us: u64, done_us: u64, lba: u64, blocks: u32) -> Read {
        Read {
            issue_us,
            done_us,
            lba,
            blocks,
        }
    }

    #[test]
    fn round_trips_and_rejects_nonsense() {
        let t = Trace {
            image_bytes: 1 << 20,
            reads: vec![r(0, 10, 0, 8), r(5, 30, 64, 16)],
        };
        assert_eq!(Trace::parse(&t.encode()).unwrap(), t);
        assert!(Trace::parse("# nothing\n").is_err());
        assert!(Trace::parse("1 2 3\n").is_err());
        assert!(Trace::parse("5 1 0 8\n").is_err(), "done before issue");
        assert!(Trace::parse("0 1 0 0\n").is_err(), "empty read");
        assert!(Trace::parse("9 10 0 8\n1 2 0 8\n").is_err(), "out of order");
    }

    #[test]
    fn steps_keep_causality_and_bursts() {
        // 0 and 1 are one burst; 2 waited for 1 then thought 100 us; 3 was issued
        // while 2 was in flight, 4 after everything.
        let t = Trace {
            image_bytes: 0,
            reads: vec![
                r(0, 50, 0, 8),
                r(2, 60, 8, 8),
                r(160, 200, 100, 8),
                r(170, 190, 300, 8),
                r(500, 510, 9, 1),
            ],
        };
        let s = t.steps();
        assert_eq!(
            s[0],
            Step {
                after: None,
                think_us: 0,
                burst_us: 0
            }
        );
        assert_eq!(
            s[1],
            Step {
                after: None,
                think_us: 2,
                burst_us: 2
            }
        );
        assert_eq!(
            s[2],
            Step {
                after: Some(1),
                think_us: 100,
                burst_us: 158
            }
        );
        assert_eq!(
            s[3],
            Step {
                after: Some(1),
                think_us: 110,
                burst_us: 10
            }
        );
        assert_eq!(
            s[4],
            Step {
                after: Some(2),
                think_us: 300,
                burst_us: 330
            }
        );
    }

    #[test]
    fn unique_bytes_count_overlaps_once() {
        let t = Trace {
            image_bytes: 0,
            reads: vec![r(0, 1, 0, 8), r(1, 2, 4, 8), r(2, 3, 100, 1), r(3, 4, 0, 2)],
        };
        assert_eq!(t.unique_bytes(), (12 + 1) * 512);
        assert_eq!(t.bytes_read(), (8 + 8 + 1 + 2) * 512);
        assert_eq!(t.extent(), 101 * 512);
    }
}
