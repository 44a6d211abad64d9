//! Connection admission: counts open TCP connections, in total and per peer address,
//! and decides at accept time whether a new one is within the configured limits.

use std::collections::HashMap;
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

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_addr: HashMap<IpAddr, usize>,
}

#[derive(Debug, Default)]
pub struct ConnGate {
    limits: ConnLimits,
    counts: Mutex<Counts>,
}

impl ConnGate {
    pub fn new(limits: ConnLimits) -> Arc<ConnGate> {
        Arc::new(ConnGate {
            limits,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn open(&self) -> usize {
        self.lock().total
    }

    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Admission {
        let mut c = self.lock();
        let mine = c.by_addr.get(&addr).copied().unwrap_or(0);
        // Refusing politely costs a task and a socket each; past twice the limit
        // the answer is a closed connection.
        if c.total >= self.limits.total.saturating_mul(2)
            || mine >= self.limits.per_address.saturating_mul(2)
        {
            return Admission::Drop(format!("{} connections open, {mine} from {addr}", c.total));
        }
        let over = if c.total >= self.limits.total {
            Some(format!("{} connections open (max_connections)", c.total))
        } else if mine >= self.limits.per_address {
            Some(format!(
                "{mine} connections from {addr} (max_connections_per_address)"
            ))
        } else {
            None
        };
        c.total += 1;
        *c.by_addr.entry(addr).or_insert(0) += 1;
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
        let mut c = self.gate.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                c.by_addr.remove(&self.addr);
            }
        }
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
