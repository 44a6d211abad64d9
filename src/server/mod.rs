//! The tokio edge: listeners, one task per connection that moves bytes between the
//! socket and the sans-IO [`crate::session::Connection`], the session registry
//! (TSIH, reinstatement) and graceful shutdown.

pub mod conn;
pub mod control;
pub mod fds;
pub mod limits;
pub mod registry;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::login::LoginSettings;
use crate::scsi::TargetPort;
use crate::session::SessionSettings;
use crate::store::ServedLuns;

pub use limits::{ConnGate, ConnLimits};
pub use registry::{Registry, SessionInfo, SessionLimits};

/// Counters kept by the connection tasks.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub connections: std::sync::atomic::AtomicU64,
    pub commands: std::sync::atomic::AtomicU64,
    pub bytes_sent: std::sync::atomic::AtomicU64,
    /// Listening with its LUN table loaded and not draining (`/readyz`).
    pub ready: std::sync::atomic::AtomicBool,
    /// READ service time: from the command's arrival to its data handed to the
    /// connection (a cache hit, a disk read or a fetch from S3).
    pub read_latency: Arc<crate::latency::Latency>,
}

/// Everything connections share.
#[derive(Debug)]
pub struct Target {
    pub login: Arc<LoginSettings>,
    pub session: Arc<SessionSettings>,
    pub port: Arc<TargetPort>,
    /// Advertised portals (`host:port`); empty means "the address the initiator
    /// connected to".
    pub advertise: Vec<String>,
    pub luns: watch::Receiver<Arc<ServedLuns>>,
    pub registry: Arc<Registry>,
    pub gate: Arc<ConnGate>,
    pub stats: Arc<ServeStats>,
    /// ALUA state and drain, as the operator sets them.
    pub control: watch::Receiver<control::Control>,
}

impl Target {
    /// SendTargets `TargetAddress` values for a connection that arrived on `local`:
    /// while draining with peers to go to, theirs.
    pub fn portals_for(&self, local: SocketAddr) -> Vec<String> {
        let c = self.control.borrow();
        if c.draining && !c.redirect_to.is_empty() {
            return c.redirect_to.clone();
        }
        let tag = self.login.portal_group_tag;
        if self.advertise.is_empty() {
            vec![format!("{local},{tag}")]
        } else {
            self.advertise
                .iter()
                .map(|a| format!("{a},{tag}"))
                .collect()
        }
    }
}

/// The next connection on `listener`. Accept errors (out of file descriptors above
/// all) are logged once per run of them and backed off, so a listener never spins a
/// core while the process has no descriptor to give.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok(c) => {
                if failing {
                    info!("accepting again");
                }
                return c;
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "accept failed; backing off");
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accept connections on every listener until `shutdown` flips, then give open
/// connections a moment to finish before returning.
pub async fn serve(
    target: Arc<Target>,
    listeners: Vec<TcpListener>,
    shutdown: watch::Receiver<bool>,
) {
    let mut accepts = Vec::new();
    for listener in listeners {
        let target = Arc::clone(&target);
        let mut shutdown = shutdown.clone();
        accepts.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    (stream, peer) = accept(&listener) => {
                        let (guard, refuse) = match target.gate.admit(peer.ip()) {
                            limits::Admission::Admit(g) => (g, None),
                            limits::Admission::Refuse(g, why) => (g, Some(why)),
                            limits::Admission::Drop(why) => {
                                warn!(%peer, limit = %why, "connection dropped: over limits");
                                continue;
                            }
                        };
                        let span = tracing::info_span!("conn", %peer, initiator = tracing::field::Empty, tsih = tracing::field::Empty);
                        let fut = conn::run(stream, peer, Arc::clone(&target), shutdown.clone(), guard, refuse);
                        tokio::spawn(fut.instrument(span));
                    }
                    _ = shutdown.changed() => break,
                }
            }
        }));
    }
    for a in accepts {
        let _ = a.await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Every connection task holds its slot of the gate until it ends.
    while target.gate.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(open = target.gate.open(), "stopped");
}
