//! Bytes a session buffers because an initiator sent them or asked for them to be
//! kept: commands held for a CmdSN gap, VERIFY data collected before the compare,
//! text requests being reassembled and long text answers being sent. Each session
//! has a budget of its own, and all sessions draw from one target-wide budget, so
//! no peer (nor many of them together) can grow the process past a known bound.
//!
//! Image bytes on their way out are not counted here: they are slices of the mapped
//! image or of cached chunks, and the connection stops reading commands while its
//! writes are behind (see `server::wire`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Defaults: 16 MiB per session is four times the largest VERIFY we collect; the
/// target-wide bound keeps thousands of sessions within 512 MiB together.
pub const DEFAULT_SESSION_BYTES: usize = 16 << 20;
pub const DEFAULT_TARGET_BYTES: usize = 512 << 20;

/// The budget every session of a target draws from.
#[derive(Debug)]
pub struct TargetBudget {
    limit: usize,
    used: AtomicUsize,
}

impl Default for TargetBudget {
    fn default() -> Self {
        TargetBudget {
            limit: DEFAULT_TARGET_BYTES,
            used: AtomicUsize::new(0),
        }
    }
}

impl TargetBudget {
    pub fn new(limit: usize) -> Arc<TargetBudget> {
        Arc::new(TargetBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        // Never below zero, whatever a caller got wrong.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// One session's share; what it still holds goes back to the target when dropped.
#[derive(Debug)]
pub struct SessionBudget {
    limit: usize,
    used: usize,
    target: Arc<TargetBudget>,
}

impl SessionBudget {
    pub fn new(limit: usize, target: Arc<TargetBudget>) -> SessionBudget {
        SessionBudget {
            limit,
            used: 0,
            target,
        }
    }

    /// Account `n` more bytes, if both this session and the target have room.
    #[must_use]
    pub fn try_charge(&mut self, n: usize) -> bool {
        let fits = self.used.checked_add(n).is_some_and(|t| t <= self.limit);
        if !fits || !self.target.try_take(n) {
            return false;
        }
        self.used += n;
        true
    }

    pub fn release(&mut self, n: usize) {
        let n = n.min(self.used);
        self.used -= n;
        self.target.give(n);
    }

    pub fn used(&self) -> usize {
        self.used
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for SessionBudget {
    fn drop(&mut self) {
        self.target.give(self.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_and_target_bounds_both_hold() {
        let target = TargetBudget::new(100);
        let mut a = SessionBudget::new(60, Arc::clone(&target));
        let mut b = SessionBudget::new(60, Arc::clone(&target));
        assert!(a.try_charge(60));
        assert!(!a.try_charge(1), "session limit");
        assert!(b.try_charge(40));
        assert!(!b.try_charge(1), "target limit");
        assert_eq!(target.used(), 100);
        a.release(30);
        assert!(b.try_charge(20));
        assert!(!b.try_charge(usize::MAX), "no overflow");
        drop(b);
        assert_eq!(target.used(), 30);
        a.release(1000);
        assert_eq!((a.used(), target.used()), (0, 0));
    }
}
