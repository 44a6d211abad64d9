//! The `s3lun` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use s3lun::admin;
use s3lun::assemble::Backends;
use s3lun::catalog::lun_numbers::LunMap;
use s3lun::catalog::shared_map::{MapError, MapStats, SharedMap};
use s3lun::catalog::{
    self,
    live::{Builder, Shared},
};
use s3lun::config::{Config, LunConfig};
use s3lun::metrics::{self, CatalogStats};
use s3lun::scsi::AccessState;
use s3lun::scsi::TargetPort;
use s3lun::server::control::Control;
use s3lun::server::{self, Registry, Target};
use s3lun::store::ServedLuns;
use std::time::Duration;

/// Where the packages install the config.
const PACKAGED_CONFIG: &str = "/etc/s3lun/s3lun.toml";

/// The demo's target name (unless one is given).
const DEMO_TARGET: &str = "iqn.2023-06.csm.iscsi:demo";

/// LUN URLs printed at start, for the lab case to copy (the rest: `iscsi-ls -s`).
const ANNOUNCED_LUNS: usize = 4;

/// The demo image: a tiny squashfs with a README and a marker file.
const DEMO_IMAGE: &[u8] = include_bytes!("../assets/demo.squashfs");

#[derive(Parser)]
#[command(
    name = "s3lun",
    version,
    about = "Userspace iSCSI target serving read-only images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve LUNs over iSCSI until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Fill the block cache for S3 images ahead of a boot storm.
    Warm {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Images to warm (s3:// URLs or configured identities); default: all.
        images: Vec<String>,
        /// Chunks fetched at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Print what the catalog would serve (images, LUNs, content keys, WWIDs,
    /// problems) without starting the target.
    Catalog {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Steer a running target through its admin socket: `alua <state>` (
    /// active-optimized, active-non-optimized, standby, unavailable, transitioning),
    /// `drain` (returns when the target has drained), `state`.
    Admin {
        /// The target's `admin_socket`.
        #[arg(long, default_value = "/run/s3lun/admin.sock")]
        socket: PathBuf,
        #[arg(required = true)]
        command: Vec<String>,
    },
    /// Show a running target: LUNs, sessions, cache, S3 and catalog, as a tree (from
    /// its HTTP listener's /status).
    Status {
        /// The target's config (default: /etc/s3lun/s3lun.toml, where it exists).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The target's HTTP listener (default: the config's metrics_listen).
        #[arg(long)]
        address: Option<String>,
        /// Print the JSON as served.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration without serving: one line per problem, non-zero exit
    /// when there is any.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Build an image's chunk digest index and publish it beside the image
    /// (`<key>.s3lun-index`), so that every chunk fetched from S3 is checked against
    /// it. Run it after each upload; an index of another ETag is ignored.
    Index {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// s3://bucket/key, or a local file (with --etag)
        image: String,
        /// Bytes per digest: the cache's chunk_size must be a multiple of it.
        #[arg(long, default_value_t = s3lun::store::index::DEFAULT_CHUNK)]
        chunk_size: u64,
        /// The ETag the image has in S3 (required for a local file; checked for S3).
        #[arg(long)]
        etag: Option<String>,
        /// Write the index here instead of beside the image.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Show the fleet's shared LUN map, or retire a number for good (`retire N`):
    /// the only way a LUN number leaves its image. Instances that serve it keep it.
    Lunmap {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: LunmapOp,
    },
    /// Inspect or clean the block cache.
    Cache {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: CacheOp,
    },
}

#[derive(Subcommand)]
enum LunmapOp {
    /// Numbers, identities and retired numbers.
    Show,
    /// Take a number out of use for good.
    Retire { number: u64 },
}

#[derive(Subcommand)]
enum CacheOp {
    /// Chunks and bytes per content key.
    Stats,
    /// Check every chunk's CRC, removing bad ones.
    Verify,
    /// Remove cached chunks: all, or one image's (`--key` takes its s3:// URL, its
    /// ETag or the namespace `cache stats` prints).
    Purge {
        #[arg(long)]
        key: Option<String>,
    },
}

fn load(config: &Option<PathBuf>) -> anyhow::Result<Config> {
    match config {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags override it.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable; default 127.0.0.1:3260), e.g.
    /// 10.252.1.9:3260 or 127.0.0.1:0.
    #[arg(short, long)]
    listen: Vec<String>,
    /// Address SendTargets advertises (repeatable), e.g. 10.0.0.5:3260.
    #[arg(short, long)]
    advertise: Vec<String>,
    /// Target IQN (default iqn.2023-06.csm.iscsi:<hostname>; with --demo,
    /// iqn.2023-06.csm.iscsi:demo).
    #[arg(long)]
    target_name: Option<String>,
    /// Image file to serve as the next LUN (repeatable); `N=PATH` picks the number.
    #[arg(long = "lun", value_name = "[N=]PATH")]
    luns: Vec<String>,
    /// Also serve the built-in demo squashfs.
    #[arg(long)]
    demo: bool,
    /// Seconds of silence before a NOP-In ping (0 disables).
    #[arg(long)]
    nop_interval: Option<u64>,
    /// JSON file that keeps LUN numbers stable across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Seconds to wait for the answer to a NOP-In ping before closing.
    #[arg(long)]
    nop_timeout: Option<u64>,
    /// Close a session idle (no commands) this many seconds; 0 never.
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Most live sessions, in total.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Most live sessions from one initiator name.
    #[arg(long)]
    max_sessions_per_initiator: Option<usize>,
    /// Most open TCP connections, in total.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most open TCP connections from one peer address.
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Unix socket for `s3lun admin`.
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// Portal (`host:port`) a draining target sends new logins to (repeatable).
    #[arg(long)]
    redirect_to: Vec<String>,
    /// Seconds a drain waits for sessions to log out.
    #[arg(long)]
    drain_timeout: Option<u64>,
    /// ALUA target port group of this instance (distinct per worker).
    #[arg(long)]
    alua_port_group: Option<u16>,
    /// Log lines as "text" or "json".
    #[arg(long)]
    log_format: Option<s3lun::logging::Format>,
}

fn parse_lun(spec: &str) -> anyhow::Result<LunConfig> {
    let (lun, path) = match spec.split_once('=') {
        Some((n, p)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            (Some(n.parse().context("LUN number")?), p)
        }
        _ => (None, spec),
    };
    let mut l = LunConfig {
        lun,
        ..LunConfig::default()
    };
    if path.starts_with("s3://") {
        l.s3 = Some(path.to_string());
    } else {
        l.path = Some(PathBuf::from(path));
    }
    Ok(l)
}

fn demo_image() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("s3lun");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("demo.squashfs");
    if std::fs::read(&path).ok().as_deref() != Some(DEMO_IMAGE) {
        let tmp = dir.join(format!("demo.squashfs.{}", std::process::id()));
        std::fs::write(&tmp, DEMO_IMAGE).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Where `s3lun status` finds the target: its `metrics_listen`, an unspecified
/// address asked on loopback.
fn status_address(cfg: &Config) -> anyhow::Result<String> {
    let a = cfg
        .metrics_listen
        .as_deref()
        .context("no metrics_listen in the config: pass --address host:port")?;
    let sa: SocketAddr = a.parse().with_context(|| format!("metrics_listen {a:?}"))?;
    Ok(match sa.ip().is_unspecified() {
        true => format!("127.0.0.1:{}", sa.port()),
        false => a.to_string(),
    })
}

/// The configuration file with the command-line flags applied on top.
fn effective_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        cfg.listen = args.listen.clone();
    }
    if !args.advertise.is_empty() {
        cfg.advertise = args.advertise.clone();
    }
    if args.target_name.is_some() {
        cfg.target_name = args.target_name.clone();
    }
    if let Some(n) = args.nop_interval {
        cfg.nop_interval_secs = n;
    }
    if let Some(n) = args.nop_timeout {
        cfg.nop_timeout_secs = n;
    }
    if let Some(n) = args.idle_timeout {
        cfg.idle_timeout_secs = n;
    }
    if let Some(n) = args.max_sessions {
        cfg.max_sessions = n;
    }
    if let Some(n) = args.max_sessions_per_initiator {
        cfg.max_sessions_per_initiator = n;
    }
    if let Some(n) = args.max_connections {
        cfg.max_connections = n;
    }
    if let Some(n) = args.max_connections_per_address {
        cfg.max_connections_per_address = n;
    }
    if args.metrics_listen.is_some() {
        cfg.metrics_listen = args.metrics_listen.clone();
    }
    if args.state_file.is_some() {
        cfg.state_file = args.state_file.clone();
    }
    if args.admin_socket.is_some() {
        cfg.admin_socket = args.admin_socket.clone();
    }
    if !args.redirect_to.is_empty() {
        cfg.redirect_to = args.redirect_to.clone();
    }
    if let Some(n) = args.drain_timeout {
        cfg.drain_timeout_secs = n;
    }
    if args.alua_port_group.is_some() {
        cfg.alua_port_group = args.alua_port_group;
    }
    if let Some(f) = args.log_format {
        cfg.log_format = f;
    }
    for spec in &args.luns {
        cfg.luns.push(parse_lun(spec)?);
    }
    if args.demo {
        // A fixed name, so the README's commands work as written.
        cfg.target_name
            .get_or_insert_with(|| DEMO_TARGET.to_string());
        cfg.luns.push(LunConfig {
            path: Some(demo_image()?),
            identity: Some("s3lun-demo".into()),
            ..LunConfig::default()
        });
    }
    cfg.validate()?;
    if cfg.luns.is_empty() && cfg.catalog.is_empty() {
        bail!(
            "no LUNs configured: pass --lun PATH, --demo, [[lun]] or [catalog] in the config file"
        );
    }
    Ok(cfg)
}

/// A line on stdout for scripts; a closed stdout must not take the target down.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn log_luns(luns: &ServedLuns) {
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
/// first scan, right after the listeners are up, so a slow or absent S3 never holds
/// up the first login; a server that ignores conditional writes stops the target
/// there, with the error.
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

async fn serve(args: ServeArgs, cfg: Config) -> anyhow::Result<()> {
    raise_fd_limit(&cfg)?;
    let login = Arc::new(cfg.login_settings()?);
    let map = match &cfg.state_file {
        Some(p) => LunMap::load(p)?,
        None => LunMap::ephemeral(),
    };
    let backends = Backends::build(&cfg, tokio::runtime::Handle::current())?;
    let shared = shared_map(&cfg, &backends)?;
    let lunmap_stats = shared.as_ref().map(|s| Arc::clone(&s.stats));
    // Static LUNs plus the catalog as last known: never an empty set at start-up.
    let mut builder = Builder::new(map, backends.clone(), shared);
    // From the state file alone: the first scan (at once, below) reads the shared
    // map, so a slow or absent S3 never holds up the first login.
    let luns = builder.build(&cfg, None, false).await?;
    log_luns(&luns);
    let catalog_stats = Arc::new(CatalogStats::default());
    let target_name = cfg.target_name();
    let (luns_tx, luns_rx) = watch::channel(Arc::new(luns));
    let (control_tx, control_rx) = watch::channel(Control {
        redirect_to: cfg.redirect_addresses(),
        ..Control::default()
    });
    let (admin_tx, mut admin_rx) = mpsc::channel::<admin::Request>(8);
    if let Some(path) = &cfg.admin_socket {
        // The default path needs root (/run); a lab run without it goes on without.
        if let Err(e) = admin::listen(path, admin_tx) {
            warn!(error = format!("{e:#}"), "no admin socket");
        }
    }
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
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics {addr}"))?;
        announce(&format!("s3lun: metrics on {}", l.local_addr()?));
        let m = metrics::Metrics {
            target: Arc::clone(&target),
            cache: Arc::clone(&backends.cache),
            s3: backends.s3.as_ref().map(|c| Arc::clone(&c.stats)),
            catalog: Arc::clone(&catalog_stats),
            lunmap: lunmap_stats,
            started: s3lun::store::served::unix_now(),
        };
        tokio::spawn(metrics::serve(l, m));
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
    // Signals are ours before anyone is told we are up: a SIGTERM right after
    // READY=1 (systemd, a benchmark) would otherwise kill the process unannounced.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(Arc::clone(&target), listeners, stop_rx));
    target.stats.ready.store(true, Ordering::Relaxed);
    // Listening with the LUN table loaded: logins work from here on.
    s3lun::notify::notify(&format!(
        "READY=1\nSTATUS=serving {} LUNs",
        luns_tx.borrow().len()
    ));
    let mut drained: Option<oneshot::Sender<String>> = None;
    // An admin `reload` is answered once the reload is done.
    let mut reloaded: Option<oneshot::Sender<String>> = None;
    let mut cfg = cfg;
    let refresh = match cfg.catalog.refresh_secs {
        0 => Duration::from_secs(365 * 24 * 3600),
        n => Duration::from_secs(n),
    };
    // The first tick is immediate: the first scan runs while the known set serves.
    // A scan that outlasts the interval is followed by the next one a whole interval
    // later, never at once (scans never overlap: they run in this loop).
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scan_memory = catalog::scan::ScanMemory::default();
    loop {
        let reload_config = tokio::select! {
            _ = hup.recv() => {
                s3lun::notify::notify("RELOADING=1");
                true
            }
            _ = ticker.tick() => false,
            _ = term.recv() => {
                drain(&target, &control_tx, &cfg).await;
                break;
            }
            _ = int.recv() => break,
            Some(req) = admin_rx.recv() => {
                match req.command {
                    admin::Command::Drain => {
                        // Answered once drained, just before the process exits.
                        drained = Some(req.reply);
                        drain(&target, &control_tx, &cfg).await;
                        break;
                    }
                    admin::Command::Reload => {
                        info!("reload asked for on the admin socket");
                        s3lun::notify::notify("RELOADING=1");
                        reloaded = Some(req.reply);
                        true
                    }
                    command => {
                        let _ = req.reply.send(admin_answer(command, &target, &control_tx, &backends));
                        continue;
                    }
                }
            }
        };
        if reload_config {
            match effective_config(&args) {
                Ok(c) => cfg = c,
                Err(e) => {
                    let e = format!("{e:#}");
                    error!(
                        error = e,
                        "reload: bad configuration, keeping the current one"
                    );
                    s3lun::notify::notify("READY=1");
                    if let Some(r) = reloaded.take() {
                        let _ = r.send(format!("error: {e}"));
                    }
                    continue;
                }
            }
        }
        if let (false, Some(client)) = (cfg.catalog.is_empty(), &backends.s3) {
            let started = std::time::Instant::now();
            let scan =
                catalog::scan(client, &cfg.catalog, &builder.previous(), &mut scan_memory).await;
            catalog_stats.scan_duration.observe(started.elapsed());
            catalog_stats.record(&scan);
            builder.apply_scan(scan);
        } else if !reload_config && cfg.lunmap.s3.is_none() {
            // Nothing to rescan; with a shared map, the tick still syncs numbers.
            continue;
        }
        let current = luns_tx.borrow().clone();
        let built = builder.build(&cfg, Some(&current), true).await;
        // A server that ignores conditional writes could let two instances give one
        // number to two images: stop. One that refuses those that must succeed only
        // keeps new images unnumbered: serve the numbers known (sync reports it).
        if let Some(e @ MapError::Ignored(_)) =
            builder.shared.as_ref().and_then(|s| s.refused.clone())
        {
            error!(error = %e, "refusing the shared LUN map: stopping");
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Err(e.into());
        }
        catalog_stats
            .unnumbered
            .store(builder.unnumbered as u64, Ordering::Relaxed);
        match built {
            Ok(new) => {
                if current.table.same_as(&new.table) {
                    if current.retiring != new.retiring {
                        // Only what /status and the metrics report changed.
                        info!(retiring = ?new.retiring, "retiring LUNs changed");
                        luns_tx.send_replace(Arc::new(current.with_retiring(new.retiring)));
                    } else {
                        info!("LUNs unchanged");
                    }
                } else {
                    info!("LUNs changed");
                    log_luns(&new);
                    luns_tx.send_replace(Arc::new(new));
                }
            }
            Err(e) => error!(
                error = format!("{e:#}"),
                "reload failed, keeping the current LUNs"
            ),
        }
        if reload_config {
            s3lun::notify::notify("READY=1");
            if let Some(r) = reloaded.take() {
                let n = luns_tx.borrow().len();
                let _ = r.send(format!("ok: reloaded, {n} LUNs"));
            }
        }
    }
    info!("shutting down");
    s3lun::notify::notify("STOPPING=1");
    target.stats.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(reply) = drained {
        let _ = reply.send("ok: drained".into());
        // Let the admin client read its answer before the process is gone.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Chunks fetched but not yet on disk would be fetched again after a restart.
    let cache = Arc::clone(&backends.cache);
    let _ = tokio::task::spawn_blocking(move || cache.flush()).await;
    backends.cache.close();
    Ok(())
}

/// The one-line answer to an admin command that is done at once.
fn admin_answer(
    command: admin::Command,
    target: &Target,
    control: &watch::Sender<Control>,
    backends: &Backends,
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
            format!(
                "ok: alua {}, {what}, {} sessions",
                c.access,
                target.registry.len()
            )
        }
        admin::Command::Purge(key) => {
            let (chunks, bytes) = backends.cache.purge(key.as_deref());
            info!(key = ?key, chunks, bytes, "cache purged by the operator");
            format!("ok: purged {chunks} chunks ({bytes} bytes) from disk, and from memory")
        }
        // Handled by the caller (they outlast this call).
        admin::Command::Drain | admin::Command::Reload => "error: not here".into(),
    }
}

/// Drain: not ready, new logins sent to the peers (or refused); the port group moves
/// to `drain_state` (through transitioning when that state refuses media access), so
/// multipath moves I/O to other paths; then every session is asked to log out, and
/// the drain waits for them to go, `drain_timeout_secs` in all; the caller then
/// closes what is left.
async fn drain(target: &Target, control: &watch::Sender<Control>, cfg: &Config) {
    let timeout = Duration::from_secs(cfg.drain_timeout_secs);
    let settled = cfg.drain_access();
    info!(sessions = target.registry.len(), timeout_secs = cfg.drain_timeout_secs, redirect_to = ?cfg.redirect_to, state = %settled, "draining");
    s3lun::notify::notify("STOPPING=1\nSTATUS=draining");
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A config's log format applies from its first line; its errors are plain text.
    let serving = match &cli.cmd {
        Cmd::Serve(args) => match effective_config(args) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                s3lun::logging::init(s3lun::logging::Format::Text);
                return Err(e);
            }
        },
        _ => None,
    };
    s3lun::logging::init(
        serving
            .as_ref()
            .map_or(Default::default(), |c| c.log_format),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = run(cli.cmd, serving, &rt);
    // Dropping a runtime waits for every blocking task without end: one stuck on a
    // disk or a channel that an abandoned read still holds would keep a stopped
    // process alive. What is left after the command is done gets a second.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Run one subcommand on `rt`.
fn run(cmd: Cmd, serving: Option<Config>, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve(args) => match serving {
            Some(cfg) => rt.block_on(serve(*args, cfg)),
            None => Ok(()),
        },
        Cmd::Warm {
            config,
            images,
            parallel,
        } => rt.block_on(s3lun::tools::warm(&load(&config)?, &images, parallel)),
        Cmd::Catalog { config } => rt.block_on(s3lun::tools::catalog(&load(&config)?)),
        Cmd::Admin { socket, command } => {
            let answer = s3lun::admin::call(&socket, &command)?;
            announce(&answer);
            if answer.starts_with("error") {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Status {
            config,
            address,
            json,
        } => {
            let addr = match address {
                Some(a) => a,
                None => {
                    let packaged = PathBuf::from(PACKAGED_CONFIG);
                    let config = config.or_else(|| packaged.exists().then_some(packaged));
                    status_address(&load(&config)?)?
                }
            };
            let body = s3lun::metrics::status::fetch(&addr)?;
            if json {
                announce(body.trim_end());
            } else {
                let st: s3lun::metrics::status::Status =
                    serde_json::from_str(&body).context("reading /status")?;
                announce(st.tree().trim_end());
            }
            Ok(())
        }
        Cmd::Check { config } => {
            let problems = rt.block_on(s3lun::check::check(&config));
            for p in &problems {
                announce(&format!("problem: {p}"));
            }
            if !problems.is_empty() {
                let n = problems.len();
                let s = if n == 1 { "" } else { "s" };
                announce(&format!("{}: {n} problem{s}", config.display()));
                std::process::exit(1);
            }
            announce(&format!("{}: ok", config.display()));
            Ok(())
        }
        Cmd::Index {
            config,
            image,
            chunk_size,
            etag,
            output,
        } => rt.block_on(s3lun::tools::index(
            &load(&config)?,
            &image,
            chunk_size,
            etag.as_deref(),
            output.as_deref(),
        )),
        Cmd::Lunmap { config, op } => {
            let retire = match op {
                LunmapOp::Show => None,
                LunmapOp::Retire { number } => Some(number),
            };
            rt.block_on(s3lun::tools::lunmap(&load(&config)?, retire))
        }
        Cmd::Cache { config, op } => {
            let cfg = load(&config)?;
            match op {
                CacheOp::Stats => s3lun::tools::cache_stats(&cfg),
                CacheOp::Verify => s3lun::tools::cache_verify(&cfg, rt.handle().clone()),
                CacheOp::Purge { key } => s3lun::tools::cache_purge(&cfg, key.as_deref()),
            }
        }
    }
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
