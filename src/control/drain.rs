//! Draining a target before it stops, and the admin commands answered at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

use crate::admin;
use crate::assemble::Backends;
use crate::config::Config;
use crate::scsi::AccessState;
use crate::server::control::Control;
use crate::server::Target;

/// Drain: not ready, new logins sent to the peers (or refused); the port group moves
/// to `drain_state` (through transitioning when that state refuses media access), so
/// multipath moves I/O to other paths; then every session is asked to log out, and
/// the drain waits for them to go, `drain_timeout_secs` in all. The supervisor
/// exits at the drain's deadline whether or not this returned.
pub async fn drain(target: &Target, control: &watch::Sender<Control>, cfg: &Config) {
    let timeout = Duration::from_secs(cfg.drain_timeout_secs);
    let settled = cfg.drain_access();
    info!(sessions = target.registry.len(), timeout_secs = cfg.drain_timeout_secs, redirect_to = ?cfg.redirect_to, state = %settled, "draining");
    target.stats.ready.store(false, Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    // Each step long enough for initiators to see it, short against the timeout.
    let step = (timeout / 4).min(Duration::from_secs(1));
    let pause = || async {
        if !target.registry.is_empty() {
            tokio::time::sleep(step).await;
        }
    };
    control.send_modify(|c| c.draining = true);
    // A node with a single path (no multipath) fails I/O that a refusing state
    // answers: only a refusing drain state goes through transitioning.
    if settled != AccessState::ActiveNonOptimized {
        control.send_modify(|c| c.access = AccessState::Transitioning);
        pause().await;
    }
    control.send_modify(|c| c.access = settled);
    pause().await;
    let left = timeout.saturating_sub(start.elapsed()).as_secs().max(1);
    control.send_modify(|c| c.logout_within = Some(u16::try_from(left).unwrap_or(u16::MAX)));
    while !target.registry.is_empty() && start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    info!(
        left = target.registry.len(),
        secs = start.elapsed().as_secs_f32(),
        "drained"
    );
}

/// The one-line answer to an admin command that is done at once (`drain` and
/// `reload` go through the supervisor).
pub fn answer(
    command: admin::Command,
    target: &Target,
    control: &watch::Sender<Control>,
    backends: &Backends,
    scanning: bool,
) -> String {
    match command {
        admin::Command::Alua(state) => {
            info!(%state, "ALUA state set by the operator");
            control.send_modify(|c| c.access = state);
            format!("ok: alua {state}")
        }
        admin::Command::State => {
            let c = control.borrow().clone();
            let what = if c.draining { "draining" } else { "serving" };
            let scan = if scanning { ", scanning" } else { "" };
            format!(
                "ok: alua {}, {what}, {} sessions{scan}",
                c.access,
                target.registry.len()
            )
        }
        admin::Command::Purge(key) => {
            let (chunks, bytes) = backends.cache.purge(key.as_deref());
            info!(key = ?key, chunks, bytes, "cache purged by the operator");
            format!("ok: purged {chunks} chunks ({bytes} bytes) from disk, and from memory")
        }
        admin::Command::Drain | admin::Command::Reload => "error: not here".into(),
    }
}
