//! What every S3 request of a target adds up to: requests, bytes, errors and refused
//! answers by kind, latency, and whether the server was last seen answering.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::BadAnswer;

/// Counters shared by every S3 store of a target.
#[derive(Debug, Default)]
pub struct S3Stats {
    pub requests: AtomicU64,
    pub gets: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub latency_micros: AtomicU64,
    /// HEADs and LIST pages (the catalog's requests besides manifest GETs).
    pub heads: AtomicU64,
    pub lists: AtomicU64,
    /// Time from a GET sent to its answer's headers (the first byte).
    pub get_latency: Arc<crate::latency::Latency>,
    /// Unix milliseconds S3 last answered (any HTTP status), and last failed to (no
    /// connection, timeout): `/readyz` and `/status` tell whether it is reachable.
    pub last_answer: AtomicU64,
    pub last_unreachable: AtomicU64,
    /// Chunks whose bytes did not match the image's digest index.
    pub index_mismatches: AtomicU64,
    /// Images whose digest index was loaded and is in use.
    pub indexed_images: AtomicU64,
    /// GET answers refused by kind (see [`BadAnswer::kind`]).
    pub bad_answers: Mutex<BTreeMap<&'static str, u64>>,
}

impl S3Stats {
    /// Record whether the server answered a request (`status` of the failure, if
    /// it failed).
    pub(super) fn outcome(&self, failed_status: Option<Option<u16>>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match failed_status {
            None | Some(Some(_)) => self.last_answer.store(now, Ordering::Relaxed),
            Some(None) => self.last_unreachable.store(now, Ordering::Relaxed),
        }
    }

    pub(super) fn bad_answer(&self, e: &BadAnswer) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut m = self.bad_answers.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(e.kind()).or_default() += 1;
    }

    /// Not known to be unreachable: no request has failed to reach the server since
    /// its last answer.
    pub fn reachable(&self) -> bool {
        self.last_answer.load(Ordering::Relaxed) >= self.last_unreachable.load(Ordering::Relaxed)
    }
}
