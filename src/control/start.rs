//! Bringing a target up: file descriptors, the LUN table from the local state (no
//! S3 call: a slow or absent S3 never holds up the first login), the admin socket,
//! the metrics listener and the portals.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::admin;
use crate::assemble::Backends;
use crate::catalog::live::{Builder, Shared};
use crate::catalog::lun_numbers::LunMap;
use crate::catalog::shared_map::{MapStats, SharedMap};
use crate::cli::ANNOUNCED_LUNS;
use crate::config::Config;
use crate::metrics::{self, CatalogStats};
use crate::scsi::TargetPort;
use crate::server::control::Control;
use crate::server::{self, Registry, Target};
use crate::store::ServedLuns;

/// A target that is up: listening, with its first LUN table.
pub struct Up {
    pub target: Arc<Target>,
    pub luns: watch::Sender<Arc<ServedLuns>>,
    pub control: watch::Sender<Control>,
    pub backends: Backends,
    pub builder: Builder,
    pub catalog_stats: Arc<CatalogStats>,
    pub listeners: Vec<TcpListener>,
    pub admin: mpsc::Receiver<admin::Request>,
    /// The admin socket, removed when this is dropped.
    pub admin_socket: Option<admin::Bound>,
}

/// A line on stdout for scripts; a closed stdout must not take the target down.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn log_luns(luns: &ServedLuns) {
    for l in luns.table.iter() {
        info!(lun = l.info.lun, size = l.info.size_bytes, wwid = %l.info.identity.wwid(), identity = %l.info.identity.source, "LUN");
    }
}

/// Raise the open-files limit to cover every connection the configuration allows.
fn raise_fd_limit(cfg: &Config) -> anyhow::Result<()> {
    let s3_pool = cfg.s3.as_ref().map_or(0, |s| s.max_parallel);
    let need = cfg.max_connections
        + cfg.listen.len()
        + metrics::MAX_CONNECTIONS
        + s3_pool
        + server::fds::RESERVE as usize;
    let why = format!(
        "max_connections {} + {} listeners + {} metrics + {s3_pool} S3 + {} reserve",
        cfg.max_connections,
        cfg.listen.len(),
        metrics::MAX_CONNECTIONS,
        server::fds::RESERVE
    );
    let soft = server::fds::raise_nofile_limit(need as u64, &why)?;
    info!(open_files = soft, need, "file descriptor limit");
    Ok(())
}

/// The shared LUN map, when configured. Its conditional-write probe runs with the
/// first scan, so a slow or absent S3 never holds up the first login.
fn shared_map(cfg: &Config, backends: &Backends) -> anyhow::Result<Option<Shared>> {
    let Some(url) = &cfg.lunmap.s3 else {
        return Ok(None);
    };
    let client = backends
        .s3
        .clone()
        .context("[lunmap] s3 needs an [s3] section")?;
    let map = SharedMap::new(client, url)?;
    Ok(Some(Shared {
        map,
        probed: false,
        refused: None,
        stats: Arc::new(MapStats::default()),
    }))
}

/// Bring the target up from `cfg` and its local state.
pub async fn up(cfg: &Config) -> anyhow::Result<Up> {
    raise_fd_limit(cfg)?;
    let login = Arc::new(cfg.login_settings()?);
    let map = match &cfg.state_file {
        Some(p) => LunMap::load(p)?,
        None => LunMap::ephemeral(),
    };
    let backends = Backends::build(cfg, tokio::runtime::Handle::current())?;
    let shared = shared_map(cfg, &backends)?;
    let lunmap_stats = shared.as_ref().map(|s| Arc::clone(&s.stats));
    // Static LUNs plus the catalog as last known: never an empty set at start-up.
    let mut builder = Builder::new(map, backends.clone(), shared);
    let luns = builder.build(cfg, None, false).await?;
    log_luns(&luns);
    let catalog_stats = Arc::new(CatalogStats::default());
    let target_name = cfg.target_name();
    let (luns_tx, luns_rx) = watch::channel(Arc::new(luns));
    let (control_tx, control_rx) = watch::channel(Control {
        redirect_to: cfg.redirect_addresses(),
        ..Control::default()
    });
    let (admin_tx, admin_rx) = mpsc::channel::<admin::Request>(8);
    let target = Arc::new(Target {
        login,
        session: Arc::new(cfg.session_settings()),
        port: Arc::new(
            TargetPort::new(target_name.clone(), cfg.portal_group_tag).in_group(cfg.port_group()),
        ),
        advertise: cfg.advertise.clone(),
        luns: luns_rx,
        registry: Arc::new(Registry::new(cfg.session_limits())),
        gate: server::ConnGate::new(cfg.conn_limits()),
        stats: Arc::new(server::ServeStats::default()),
        control: control_rx,
    });
    // Metrics first: once the listening line is out, everything answers.
    if let Some(addr) = &cfg.metrics_listen {
        let l =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding metrics {addr}"))?;
        announce(&format!("s3lun: metrics on {}", l.local_addr()?));
        let m = metrics::Metrics {
            target: Arc::clone(&target),
            cache: Arc::clone(&backends.cache),
            s3: backends.s3.as_ref().map(|c| Arc::clone(&c.stats)),
            catalog: Arc::clone(&catalog_stats),
            lunmap: lunmap_stats,
            started: crate::store::served::unix_now(),
            lun_series: cfg.metrics_lun_series,
        };
        let access = metrics::Access {
            public_status: cfg.public_status,
        };
        metrics::spawn(l, m, access).context("starting the HTTP listener")?;
    }
    let mut listeners = Vec::new();
    for addr in &cfg.listen {
        let sa: SocketAddr = addr
            .parse()
            .with_context(|| format!("listen address {addr:?}"))?;
        let l =
            portal_listener(sa, cfg.max_connections).with_context(|| format!("binding {sa}"))?;
        let bound = l.local_addr()?;
        // Scripts and tests read this line to learn an ephemeral port.
        announce(&format!("s3lun: listening on {bound} as {target_name}"));
        info!(%bound, target = %target_name, "listening");
        listeners.push(l);
    }
    // One socket per instance: by default named by the first portal's port.
    let port = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let path = cfg
        .admin_socket
        .clone()
        .unwrap_or_else(|| admin::default_path(port));
    // The default path needs root (/run); a lab run without it goes on without.
    let admin_socket = match admin::listen(&path, admin_tx) {
        Ok(b) => Some(b),
        Err(e) => {
            warn!(error = format!("{e:#}"), "no admin socket");
            None
        }
    };
    if let Some(first) = listeners.first().and_then(|l| l.local_addr().ok()) {
        // A URL a client on this host can use as printed.
        let host = match first.ip().is_unspecified() {
            true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), first.port()),
            false => first,
        };
        let luns = luns_tx.borrow().clone();
        for l in luns.table.iter().take(ANNOUNCED_LUNS) {
            announce(&format!(
                "s3lun: LUN {n} is iscsi://{host}/{target_name}/{n}",
                n = l.info.lun
            ));
        }
    }
    Ok(Up {
        target,
        luns: luns_tx,
        control: control_tx,
        backends,
        builder,
        catalog_stats,
        listeners,
        admin: admin_rx,
        admin_socket,
    })
}

/// A portal's listening socket, with an accept queue as deep as the connections it
/// may hold (the kernel caps it at net.core.somaxconn): a thousand nodes booting at
/// once would overflow the default queue of 128, and each dropped SYN costs its node
/// a second before the kernel retries.
fn portal_listener(sa: SocketAddr, max_connections: usize) -> std::io::Result<TcpListener> {
    let sock = match sa {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.bind(sa)?;
    sock.listen(max_connections.clamp(1024, 65_535) as u32)
}
