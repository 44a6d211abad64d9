//! Connection admission: counts open TCP connections, in total and per peer address,
//! and decides at accept time whether a new one is within the configured limits.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Bounds on open TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub total: usize,
    pub per_address: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            total: 4096,
            per_address: 256,
        }
    }
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
pub struct ConnGate {
    limits: ConnLimits,
    counts: Mutex<Tally<IpAddr>>,
}

impl ConnGate {
    pub fn new(limits: ConnLimits) -> Arc<ConnGate> {
        Arc::new(ConnGate {
            limits,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally<IpAddr>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.lock().total()
    }

    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Admission {
        let mut c = self.lock();
        let (open, mine) = (c.total(), c.of(&addr));
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
        let guard = ConnGuard {
            gate: Arc::clone(self),
            addr,
        };
        match over {
            Some(reason) => Admission::Refuse(guard, reason),
            None => Admission::Admit(guard),
        }
    }
}

/// One counted connection.
#[derive(Debug)]
pub struct ConnGuard {
    gate: Arc<ConnGate>,
    addr: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.gate.lock().remove(&self.addr);
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
}
