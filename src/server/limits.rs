//! Connection admission: counts open TCP connections, in total and per peer address,
//! and decides at accept time whether a new one is within the configured limits.
//!
//! Connections that have not authenticated (no login completed with the target's
//! authentication) have a budget of their own, per address and in total: past the
//! address's budget a new one is closed unread; past the total (or past
//! `max_connections`), the oldest unauthenticated connection of the address holding
//! the most is closed to make room. A flood of silent or half-finished logins thus
//! evicts its own connections, never an authenticated session, and a legitimate
//! login from another address gets in.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Bounds on open TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub total: usize,
    pub per_address: usize,
    /// Connections not yet authenticated, in total.
    pub unauthenticated: usize,
    /// Connections not yet authenticated, from one address.
    pub unauthenticated_per_address: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            total: 4096,
            per_address: 256,
            unauthenticated: 1024,
            unauthenticated_per_address: 256,
        }
    }
}

/// Unauthenticated connections, oldest first.
#[derive(Debug, Default)]
struct PreAuth {
    next: u64,
    order: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    by_addr: Tally<IpAddr>,
    /// Evicted, not yet closed: they make room already.
    closing: std::collections::HashSet<u64>,
}

impl PreAuth {
    fn remove(&mut self, seq: u64) {
        if let Some((addr, _)) = self.order.remove(&seq) {
            self.by_addr.remove(&addr);
        }
    }

    /// Close the oldest connection of the address holding the most; it stays open
    /// (and counted in `open`) until its task sees the notice.
    fn evict_one(&mut self) -> bool {
        let Some(heaviest) = self.by_addr.heaviest() else {
            return false;
        };
        let Some(seq) = self
            .order
            .iter()
            .find(|(_, (a, _))| *a == heaviest)
            .map(|(s, _)| *s)
        else {
            return false;
        };
        if let Some((_, n)) = self.order.get(&seq) {
            n.notify_one();
        }
        self.remove(seq);
        self.closing.insert(seq);
        true
    }
}

/// What the gate counted, for the metrics.
#[derive(Debug, Default)]
pub struct GateStats {
    /// Unauthenticated connections closed to make room for new ones.
    pub evicted: AtomicU64,
    /// Connections closed unread: over an address's unauthenticated budget.
    pub dropped_unauthenticated: AtomicU64,
}

/// What accept should do with a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Within limits; the guard gives the slot back when dropped.
    Admit(ConnGuard),
    /// Over a limit: answer the login with "out of resources", then close. Still
    /// counted, so a flood of refused connections stays bounded too.
    Refuse(ConnGuard, String),
    /// Far over the limit: close without reading a byte.
    Drop(String),
}

/// A count in total and per key (peer address, initiator name), keys dropped at
/// zero so the map only holds what is open.
#[derive(Debug)]
pub(crate) struct Tally<K> {
    total: usize,
    by_key: HashMap<K, usize>,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            total: 0,
            by_key: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Tally<K> {
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn of(&self, key: &K) -> usize {
        self.by_key.get(key).copied().unwrap_or(0)
    }

    pub(crate) fn add(&mut self, key: K) {
        self.total += 1;
        *self.by_key.entry(key).or_insert(0) += 1;
    }

    /// The key with the highest count.
    pub(crate) fn heaviest(&self) -> Option<K>
    where
        K: Clone,
    {
        self.by_key
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| k.clone())
    }

    pub(crate) fn remove(&mut self, key: &K) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_key.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_key.remove(key);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    open: Tally<IpAddr>,
    pre: PreAuth,
}

#[derive(Debug, Default)]
pub struct ConnGate {
    limits: ConnLimits,
    counts: Mutex<Counts>,
    pub stats: GateStats,
}

impl ConnGate {
    pub fn new(limits: ConnLimits) -> Arc<ConnGate> {
        Arc::new(ConnGate {
            limits,
            counts: Mutex::default(),
            stats: GateStats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.lock().open.total()
    }

    /// Connections open that have not authenticated.
    pub fn unauthenticated(&self) -> usize {
        self.lock().pre.by_addr.total()
    }

    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Admission {
        let mut g = self.lock();
        let pre_mine = g.pre.by_addr.of(&addr);
        if pre_mine >= self.limits.unauthenticated_per_address {
            self.stats
                .dropped_unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            return Admission::Drop(format!(
                "{pre_mine} unauthenticated connections from {addr} (max_unauthenticated_per_address)"
            ));
        }
        // Room for the new one at the expense of the oldest stranger, never of an
        // authenticated session.
        while g.pre.by_addr.total() >= self.limits.unauthenticated
            || (g.open.total() - g.pre.closing.len() >= self.limits.total
                && g.pre.by_addr.total() > 0)
        {
            if !g.pre.evict_one() {
                break;
            }
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let closing = g.pre.closing.len();
        let c = &mut g.open;
        let (open, mine) = (c.total() - closing.min(c.total()), c.of(&addr));
        // Refusing politely costs a task and a socket each; past twice the limit
        // the answer is a closed connection.
        if open >= self.limits.total.saturating_mul(2)
            || mine >= self.limits.per_address.saturating_mul(2)
        {
            return Admission::Drop(format!("{open} connections open, {mine} from {addr}"));
        }
        let over = if open >= self.limits.total {
            Some(format!("{open} connections open (max_connections)"))
        } else if mine >= self.limits.per_address {
            Some(format!(
                "{mine} connections from {addr} (max_connections_per_address)"
            ))
        } else {
            None
        };
        c.add(addr);
        let seq = g.pre.next;
        g.pre.next += 1;
        let evict = Arc::new(Notify::new());
        g.pre.order.insert(seq, (addr, Arc::clone(&evict)));
        g.pre.by_addr.add(addr);
        let guard = ConnGuard {
            gate: Arc::clone(self),
            addr,
            seq,
            evict,
        };
        match over {
            Some(reason) => Admission::Refuse(guard, reason),
            None => Admission::Admit(guard),
        }
    }
}

/// One counted connection; unauthenticated until [`ConnGuard::authenticated`].
#[derive(Debug)]
pub struct ConnGuard {
    gate: Arc<ConnGate>,
    addr: IpAddr,
    seq: u64,
    evict: Arc<Notify>,
}

impl ConnGuard {
    /// The connection completed an authenticated login: it leaves the
    /// unauthenticated budget and can no longer be evicted.
    pub fn authenticated(&self) {
        self.gate.lock().pre.remove(self.seq);
    }

    /// Resolves when the gate closes this connection to make room.
    pub fn evicted(&self) -> Arc<Notify> {
        Arc::clone(&self.evict)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        g.open.remove(&self.addr);
        g.pre.remove(self.seq);
        g.pre.closing.remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_refuses_then_drops_and_gives_slots_back() {
        let gate = ConnGate::new(ConnLimits {
            total: 10,
            per_address: 1,
            ..ConnLimits::default()
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = gate.admit(a);
        assert!(matches!(first, Admission::Admit(_)));
        let second = gate.admit(a);
        assert!(matches!(second, Admission::Refuse(_, _)));
        assert!(matches!(gate.admit(a), Admission::Drop(_)));
        assert!(matches!(gate.admit(b), Admission::Admit(_)));
        assert_eq!(gate.open(), 2, "first and the refused second");
        drop(first);
        drop(second);
        assert_eq!(gate.open(), 0);
        assert!(matches!(gate.admit(a), Admission::Admit(_)));
    }

    fn admitted(a: Admission) -> ConnGuard {
        match a {
            Admission::Admit(g) => g,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn strangers_evict_strangers_never_sessions() {
        let gate = ConnGate::new(ConnLimits {
            total: 6,
            per_address: 100,
            unauthenticated: 3,
            unauthenticated_per_address: 2,
        });
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            [10, 0, 0, 3].into(),
        );
        let session = admitted(gate.admit(c));
        session.authenticated();
        let a1 = admitted(gate.admit(a));
        let a2 = admitted(gate.admit(a));
        assert!(
            matches!(gate.admit(a), Admission::Drop(_)),
            "a's own budget"
        );
        let b1 = admitted(gate.admit(b));
        assert_eq!(gate.unauthenticated(), 3);
        // The total budget is full: the oldest of the heaviest address (a) goes.
        let a1_gone = a1.evicted();
        let b2 = admitted(gate.admit(b));
        assert!(futures::FutureExt::now_or_never(a1_gone.notified()).is_some());
        assert_eq!(gate.stats.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(gate.unauthenticated(), 3);
        // max_connections reached: one stranger makes room, the session stays.
        let b3 = admitted(gate.admit(c));
        assert_eq!(gate.open(), 6);
        let before = gate.stats.evicted.load(Ordering::Relaxed);
        let _more = admitted(gate.admit(c));
        assert_eq!(
            gate.stats.evicted.load(Ordering::Relaxed),
            before + 1,
            "one, not all"
        );
        assert!(futures::FutureExt::now_or_never(session.evicted().notified()).is_none());
        drop((a1, a2, b1, b2, b3));
    }
}
