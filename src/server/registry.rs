//! Live sessions by (initiator name, ISID): TSIH allocation, session reinstatement
//! (a new login with the same name and ISID closes the old session) and the session
//! limits, total and per initiator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::info;

use crate::login::{LoginEnv, LoginError};

type Key = (String, [u8; 6]);

#[derive(Debug)]
struct Entry {
    tsih: u16,
    kill: Arc<Notify>,
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
pub struct Registry {
    next_tsih: AtomicU16,
    sessions: Mutex<HashMap<Key, Entry>>,
    limits: SessionLimits,
}

impl Registry {
    pub fn new(limits: SessionLimits) -> Registry {
        Registry {
            limits,
            ..Registry::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic elsewhere while holding the lock must not take every login down.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a new session; an existing one with the same key is told to close.
    pub fn register(&self, initiator: &str, isid: [u8; 6], tsih: u16) -> Arc<Notify> {
        let kill = Arc::new(Notify::new());
        let key = (initiator.to_ascii_lowercase(), isid);
        let old = self.lock().insert(
            key,
            Entry {
                tsih,
                kill: Arc::clone(&kill),
            },
        );
        if let Some(old) = old {
            info!(
                initiator,
                old_tsih = old.tsih,
                new_tsih = tsih,
                "session reinstatement"
            );
            old.kill.notify_one();
        }
        kill
    }

    pub fn unregister(&self, initiator: &str, isid: [u8; 6], tsih: u16) {
        let key = (initiator.to_ascii_lowercase(), isid);
        let mut map = self.lock();
        if map.get(&key).is_some_and(|e| e.tsih == tsih) {
            map.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LoginEnv for Registry {
    fn new_tsih(&self) -> u16 {
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

    fn session_exists(&self, tsih: u16) -> bool {
        self.lock().values().any(|e| e.tsih == tsih)
    }

    fn admit(&self, initiator: &str, isid: [u8; 6]) -> Result<(), LoginError> {
        let name = initiator.to_ascii_lowercase();
        let map = self.lock();
        if map.contains_key(&(name.clone(), isid)) {
            return Ok(());
        }
        if map.len() >= self.limits.total {
            return Err(LoginError::OutOfResources(format!(
                "{} sessions (max_sessions)",
                map.len()
            )));
        }
        let mine = map.keys().filter(|(n, _)| *n == name).count();
        if mine >= self.limits.per_initiator {
            return Err(LoginError::OutOfResources(format!(
                "{mine} sessions from {initiator} (max_sessions_per_initiator)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_sessions_but_admit_reinstatement() {
        let r = Registry::new(SessionLimits {
            total: 3,
            per_initiator: 2,
        });
        r.register("iqn.a", [1; 6], 1);
        r.register("IQN.A", [2; 6], 2);
        assert!(matches!(
            r.admit("iqn.a", [3; 6]),
            Err(LoginError::OutOfResources(_))
        ));
        assert!(r.admit("iqn.a", [2; 6]).is_ok(), "reinstatement");
        assert!(r.admit("iqn.b", [1; 6]).is_ok());
        r.register("iqn.b", [1; 6], 3);
        assert!(matches!(
            r.admit("iqn.c", [1; 6]),
            Err(LoginError::OutOfResources(_))
        ));
        r.unregister("iqn.a", [1; 6], 1);
        assert!(r.admit("iqn.c", [1; 6]).is_ok());
    }
}
