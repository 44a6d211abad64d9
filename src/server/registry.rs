//! Live sessions by (initiator name, ISID, session type): TSIH allocation, session
//! reinstatement (a new login of the same type with the same name and ISID closes
//! the old session; a Discovery login never touches a Normal session, RFC 7143
//! section 6.3.5) and the session limits, total and per initiator. A login takes
//! its slot when it is admitted, once it has authenticated and is about to enter
//! full feature phase (so a stranger holds no slot), and counts from then until it
//! ends, so logins finishing together cannot all complete past the limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::info;

use super::limits::Tally;
use crate::login::LoginError;

/// (lowercased initiator name, ISID, discovery).
type Key = (String, [u8; 6], bool);

#[derive(Debug)]
struct Entry {
    info: Arc<SessionInfo>,
    kill: Arc<Notify>,
}

/// What `/status` shows of one live session; the counters are kept by its
/// connection task.
#[derive(Debug)]
pub struct SessionInfo {
    pub initiator: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub discovery: bool,
    pub peer: SocketAddr,
    /// The portal (our address) it logged in on.
    pub portal: SocketAddr,
    /// Unix seconds.
    pub login_time: u64,
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    /// LUNs it has read, in first-read order.
    luns: Mutex<Vec<u64>>,
}

impl SessionInfo {
    pub fn new(
        initiator: &str,
        isid: [u8; 6],
        tsih: u16,
        discovery: bool,
        peer: SocketAddr,
        portal: SocketAddr,
    ) -> SessionInfo {
        SessionInfo {
            initiator: initiator.to_string(),
            isid,
            tsih,
            discovery,
            peer,
            portal,
            login_time: crate::store::served::unix_now(),
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            luns: Mutex::new(Vec::new()),
        }
    }

    /// The session read `lun` (callers skip the lock when it is the LUN they read
    /// last).
    pub fn note_lun(&self, lun: u64) {
        let mut l = self.luns.lock().unwrap_or_else(|p| p.into_inner());
        if !l.contains(&lun) {
            l.push(lun);
        }
    }

    pub fn luns(&self) -> Vec<u64> {
        self.luns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Bounds on live sessions (normal and discovery alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub total: usize,
    pub per_initiator: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            total: 4096,
            per_initiator: 64,
        }
    }
}

#[derive(Debug, Default)]
struct Sessions {
    live: HashMap<Key, Entry>,
    /// Slots held by logins admitted but not yet complete, per initiator name.
    pending: Tally<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    next_tsih: AtomicU16,
    sessions: Mutex<Sessions>,
    limits: SessionLimits,
}

/// A session slot taken by a login in progress; given back when dropped (the login
/// failed, or completed and was registered).
#[derive(Debug)]
pub struct SessionSlot {
    registry: Arc<Registry>,
    name: String,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.registry.lock().pending.remove(&self.name);
    }
}

impl Registry {
    pub fn new(limits: SessionLimits) -> Registry {
        Registry {
            limits,
            ..Registry::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic elsewhere while holding the lock must not take every login down.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a new session; an existing one with the same key is told to close.
    pub fn register(&self, info: Arc<SessionInfo>) -> Arc<Notify> {
        let kill = Arc::new(Notify::new());
        let key = (
            info.initiator.to_ascii_lowercase(),
            info.isid,
            info.discovery,
        );
        let (initiator, tsih) = (info.initiator.clone(), info.tsih);
        let old = self.lock().live.insert(
            key,
            Entry {
                info,
                kill: Arc::clone(&kill),
            },
        );
        if let Some(old) = old {
            info!(
                initiator,
                old_tsih = old.info.tsih,
                new_tsih = tsih,
                "session reinstatement"
            );
            old.kill.notify_one();
        }
        kill
    }

    pub fn unregister(&self, info: &SessionInfo) {
        let key = (
            info.initiator.to_ascii_lowercase(),
            info.isid,
            info.discovery,
        );
        let mut s = self.lock();
        if s.live.get(&key).is_some_and(|e| e.info.tsih == info.tsih) {
            s.live.remove(&key);
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live session, oldest login first.
    pub fn sessions(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self
            .lock()
            .live
            .values()
            .map(|e| Arc::clone(&e.info))
            .collect();
        v.sort_by_key(|i| (i.login_time, i.tsih));
        v
    }
}

impl Registry {
    /// A fresh, non-zero TSIH.
    pub fn new_tsih(&self) -> u16 {
        loop {
            let t = self
                .next_tsih
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if t != 0 {
                return t;
            }
        }
    }

    pub fn session_exists(&self, tsih: u16) -> bool {
        self.lock().live.values().any(|e| e.info.tsih == tsih)
    }

    /// Admit a new login from `initiator` with `isid` if it fits the limits,
    /// counting logins in progress. Reinstating a live session needs no new slot
    /// (`Ok(None)`); otherwise the slot is held until the returned guard drops.
    pub fn reserve(
        self: &Arc<Self>,
        initiator: &str,
        isid: [u8; 6],
        discovery: bool,
    ) -> Result<Option<SessionSlot>, LoginError> {
        let name = initiator.to_ascii_lowercase();
        let mut s = self.lock();
        if s.live.contains_key(&(name.clone(), isid, discovery)) {
            return Ok(None);
        }
        let total = s.live.len() + s.pending.total();
        if total >= self.limits.total {
            return Err(LoginError::OutOfResources(format!(
                "{total} sessions, with logins in progress (max_sessions)"
            )));
        }
        let mine = s.live.keys().filter(|(n, _, _)| *n == name).count() + s.pending.of(&name);
        if mine >= self.limits.per_initiator {
            return Err(LoginError::OutOfResources(format!(
                "{mine} sessions from {initiator} (max_sessions_per_initiator)"
            )));
        }
        s.pending.add(name.clone());
        Ok(Some(SessionSlot {
            registry: Arc::clone(self),
            name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, isid: [u8; 6], tsih: u16) -> Arc<SessionInfo> {
        let a = SocketAddr::from(([127, 0, 0, 1], 3260));
        Arc::new(SessionInfo::new(name, isid, tsih, false, a, a))
    }

    fn admitted(r: &Arc<Registry>, name: &str, isid: u8) -> bool {
        r.reserve(name, [isid; 6], false).is_ok()
    }

    #[test]
    fn limits_count_sessions_but_admit_reinstatement() {
        let r = Arc::new(Registry::new(SessionLimits {
            total: 3,
            per_initiator: 2,
        }));
        r.register(info("iqn.a", [1; 6], 1));
        r.register(info("IQN.A", [2; 6], 2));
        assert!(!admitted(&r, "iqn.a", 3));
        assert!(
            matches!(r.reserve("iqn.a", [2; 6], false), Ok(None)),
            "reinstatement"
        );
        assert!(admitted(&r, "iqn.b", 1));
        r.register(info("iqn.b", [1; 6], 3));
        assert!(!admitted(&r, "iqn.c", 1));
        r.unregister(&info("iqn.a", [1; 6], 1));
        assert!(admitted(&r, "iqn.c", 1));
    }

    #[test]
    fn a_discovery_session_never_reinstates_a_normal_one() {
        let r = Arc::new(Registry::new(SessionLimits::default()));
        let a = SocketAddr::from(([127, 0, 0, 1], 3260));
        let normal = r.register(info("iqn.a", [1; 6], 1));
        let disc = Arc::new(SessionInfo::new("iqn.a", [1; 6], 2, true, a, a));
        let _ = r.register(Arc::clone(&disc));
        assert_eq!(r.len(), 2, "both live");
        // The normal session was not told to close: a permit would be stored.
        let closed = futures::FutureExt::now_or_never(normal.notified()).is_some();
        assert!(!closed, "a discovery login closed a normal session");
        assert!(matches!(r.reserve("iqn.a", [1; 6], true), Ok(None)));
        r.unregister(&disc);
        assert_eq!(r.len(), 1);
        // A normal one with the same key does reinstate it.
        let _ = r.register(info("iqn.a", [1; 6], 3));
        assert!(futures::FutureExt::now_or_never(normal.notified()).is_some());
    }

    #[test]
    fn logins_in_progress_hold_their_slots() {
        let r = Arc::new(Registry::new(SessionLimits {
            total: 3,
            per_initiator: 2,
        }));
        let a1 = r.reserve("iqn.a", [1; 6], false).unwrap();
        let a2 = r.reserve("iqn.a", [2; 6], false).unwrap();
        assert!(!admitted(&r, "iqn.a", 3), "per initiator, counting logins");
        let b1 = r.reserve("iqn.b", [1; 6], false).unwrap();
        assert!(!admitted(&r, "iqn.c", 1), "in total, counting logins");
        // A failed login gives its slot back; a completed one moves it to `live`.
        drop(a2);
        r.register(info("iqn.b", [1; 6], 7));
        drop(b1);
        assert_eq!(r.len(), 1);
        let c1 = r.reserve("iqn.c", [1; 6], false).unwrap();
        assert!(!admitted(&r, "iqn.d", 1));
        drop((a1, c1));
        assert!(admitted(&r, "iqn.d", 1));
    }
}
