//! Which reads of an image are sequential, and how far to read ahead of them. An
//! image has many readers at once (every node booting from it, each through a
//! session of its own, reading files of its own), so sequential runs are followed
//! per stream, as a kernel does per open file: a read that continues one of the
//! recent streams (within a slack, since one reader's parallel requests arrive out of
//! order) extends it; any other read starts a new stream in place of the least
//! recently used. A stream's read-ahead window is a share of the run it proved, so a
//! reader at the end of a file wastes at most that share, and one reader's reads
//! re-read by others never count twice. Pure: no I/O, no time.

/// Streams followed per image.
const STREAMS: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// One past the furthest chunk read.
    next: u64,
    /// Chunks read in sequence.
    streak: u64,
    /// One past the last chunk read-ahead asked for.
    frontier: u64,
    /// When last used (0: never).
    used: u64,
}

/// How reads are judged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    /// Chunks a read may land from where a stream ended and still continue it.
    pub slack: u64,
    /// Read-ahead is streak / share.
    pub share: u64,
    /// The largest window, in chunks.
    pub max_window: u64,
    /// Chunks of the image.
    pub chunks: u64,
}

#[derive(Debug, Default)]
pub(super) struct Streams {
    slots: [Stream; STREAMS],
    tick: u64,
}

impl Streams {
    /// A read of chunks `first..=last`: the chunks to read ahead (`from..to`), if
    /// any are due.
    pub(super) fn read(&mut self, first: u64, last: u64, r: &Rules) -> Option<(u64, u64)> {
        self.tick += 1;
        let continues =
            |s: &Stream| s.used > 0 && first + r.slack >= s.next && first <= s.next + r.slack;
        let s = match self.slots.iter().position(continues) {
            Some(i) => {
                let s = &mut self.slots[i];
                // Only chunks read count, not a gap jumped over.
                s.streak += (last + 1).saturating_sub(s.next.max(first));
                s.next = s.next.max(last + 1);
                s
            }
            None => {
                let i = (0..STREAMS)
                    .min_by_key(|i| self.slots[*i].used)
                    .unwrap_or(0);
                self.slots[i] = Stream {
                    next: last + 1,
                    streak: last - first + 1,
                    frontier: last + 1,
                    used: 0,
                };
                &mut self.slots[i]
            }
        };
        s.used = self.tick;
        let window = (s.streak / r.share.max(1)).min(r.max_window);
        let frontier = s.frontier.max(last + 1);
        if window == 0 || frontier - last > window.div_ceil(2) || frontier >= r.chunks {
            return None;
        }
        let to = (frontier + window).min(r.chunks);
        s.frontier = to;
        Some((frontier, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        slack: 8,
        share: 8,
        max_window: 256,
        chunks: 1 << 20,
    };

    /// Chunks read ahead for a reader reading `reads` (first, last) in order.
    fn ahead(s: &mut Streams, reads: impl IntoIterator<Item = (u64, u64)>) -> u64 {
        reads
            .into_iter()
            .filter_map(|(f, l)| s.read(f, l, &RULES))
            .map(|(from, to)| to - from)
            .sum()
    }

    #[test]
    fn random_reads_are_never_read_ahead() {
        let mut s = Streams::default();
        let reads = (0..10_000u64).map(|i| {
            let c = (i * 7919 + 13) % (1 << 20);
            (c, c + 1)
        });
        assert_eq!(ahead(&mut s, reads), 0);
    }

    #[test]
    fn a_sequential_reader_is_read_ahead_by_a_share_of_what_it_proved() {
        let mut s = Streams::default();
        // 1024 chunks front to back: read-ahead reaches an eighth past the end at most
        // (plus half a window).
        let n = 1024;
        let got = ahead(&mut s, (0..n).map(|c| (c, c)));
        assert!(got >= n - 16, "{got}");
        let mut t = Streams::default();
        let past = ahead(&mut t, (0..n).map(|c| (c, c))) - (n - 8);
        assert!(past <= n / 8 + 64, "{past} chunks past the end");
    }

    #[test]
    fn readers_re_reading_a_file_do_not_inflate_its_window() {
        // One reader through a 64-chunk file; 19 more read each chunk again just
        // behind it. Read-ahead is what one reader alone would get.
        let alone = ahead(&mut Streams::default(), (0..64).map(|c| (c, c)));
        let mut s = Streams::default();
        let mut got = 0;
        for c in 0..64u64 {
            got += ahead(&mut s, [(c, c)]);
            for lag in 1..20u64 {
                let c = c.saturating_sub(lag % 4);
                got += ahead(&mut s, [(c, c)]);
            }
        }
        assert!(
            got <= alone + 1,
            "{got} chunks read ahead, one reader alone {alone}"
        );
    }

    #[test]
    fn readers_of_different_files_each_keep_their_stream() {
        let mut s = Streams::default();
        let files = [0u64, 100_000, 200_000, 300_000];
        let mut got = 0;
        for c in 0..256u64 {
            for f in files {
                got += ahead(&mut s, [(f + c, f + c)]);
            }
        }
        assert!(
            got >= 4 * 200,
            "interleaved readers still read ahead: {got}"
        );
    }
}
