//! Live sessions by (initiator name, ISID): TSIH allocation and session
//! reinstatement (a new login with the same name and ISID closes the old session).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::info;

use crate::login::LoginEnv;

type Key = (String, [u8; 6]);

#[derive(Debug)]
struct Entry {
    tsih: u16,
    kill: Arc<Notify>,
}

#[derive(Debug, Default)]
pub struct Registry {
    next_tsih: AtomicU16,
    sessions: Mutex<HashMap<Key, Entry>>,
}

impl Registry {
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
}
