//! The command line: subcommands, their flags, and the serve flags applied over the
//! configuration file. `main.rs` only dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::config::{Config, LunConfig};

/// Where the packages install the config.
pub const PACKAGED_CONFIG: &str = "/etc/s3lun/s3lun.toml";

/// The demo's target name (unless one is given).
const DEMO_TARGET: &str = "iqn.2023-06.csm.iscsi:demo";

/// LUN URLs printed at start, for the lab case to copy (the rest: `iscsi-ls -s`).
pub const ANNOUNCED_LUNS: usize = 4;

/// The demo image: a tiny squashfs with a README and a marker file.
const DEMO_IMAGE: &[u8] = include_bytes!("../assets/demo.squashfs");

#[derive(Parser)]
#[command(
    name = "s3lun",
    version,
    about = "Userspace iSCSI target serving read-only images"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Serve LUNs over iSCSI until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Fill the block cache for S3 images ahead of a boot storm.
    Warm {
        /// The TOML configuration file.
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
        /// The TOML configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// `text` (tab-separated, for people) or `json` (for scripts).
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Steer a running target through its admin socket: `alua <state>` (
    /// active-optimized, active-non-optimized, standby, unavailable, transitioning),
    /// `drain` (returns when the target has drained), `state`.
    Admin {
        /// The target's admin socket (default: the config's `admin_socket`, else the
        /// one socket in /run/s3lun).
        #[arg(long = "admin-socket", alias = "socket")]
        socket: Option<PathBuf>,
        /// The target's config, to find its socket.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The command and its arguments: alua STATE, drain, state, reload, purge [KEY].
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
        /// `text` (a tree, for people) or `json` (as served, for scripts).
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// The same as `--output json` (kept for scripts written before `--output`).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Check a configuration without serving: one line per problem, non-zero exit
    /// when there is any.
    Check {
        /// The TOML configuration file to check.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Build an image's chunk digest index and publish it beside the image
    /// (`<key>.s3lun-index`), so that every chunk fetched from S3 is checked against
    /// it. Run it after each upload; an index of another ETag is ignored.
    Index {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// s3://bucket/key, or a local file (with --etag)
        image: String,
        /// Bytes per digest: the cache's chunk_size must be a multiple of it.
        #[arg(long, default_value_t = crate::store::index::DEFAULT_CHUNK)]
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
        /// The TOML configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: LunmapOp,
    },
    /// Write the man pages or the shell completions (for packagers).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateOp,
    },
    /// Show or drop the boot profile the fleet shares for an image (what its first
    /// boots read, in order: workers prefetch by it).
    Profile {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: ProfileOp,
    },
    /// Inspect or clean the block cache.
    Cache {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: CacheOp,
    },
}

/// How a command prints what it found: for people or for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum GenerateOp {
    /// Man pages, one per subcommand, and s3lun.toml(5).
    Man { dir: PathBuf },
    /// bash, zsh and fish completions.
    Completions { dir: PathBuf },
}

#[derive(Subcommand)]
pub enum LunmapOp {
    /// Numbers, identities and retired numbers.
    Show,
    /// Take a number out of use for good.
    Retire {
        /// The LUN number to retire.
        number: u64,
    },
}

#[derive(Subcommand)]
pub enum ProfileOp {
    /// What the profile holds, checked as a worker checks it.
    Show {
        /// s3://bucket/key of the image.
        image: String,
        /// `text` (a summary, for people) or `json` (the profile, for scripts).
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Remove it: the next worker to serve the image records a new one.
    Drop {
        /// s3://bucket/key of the image.
        image: String,
    },
}

#[derive(Subcommand)]
pub enum CacheOp {
    /// Chunks and bytes per content key.
    Stats,
    /// Check every chunk's CRC, removing bad ones.
    Verify,
    /// Remove cached chunks: all, or one image's (`--key` takes its s3:// URL, its
    /// ETag or the namespace `cache stats` prints).
    Purge {
        /// One image's chunks only: its s3:// URL, its ETag or its cache namespace.
        #[arg(long)]
        key: Option<String>,
    },
}

pub fn load(config: &Option<PathBuf>) -> anyhow::Result<Config> {
    match config {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

#[derive(clap::Args)]
pub struct ServeArgs {
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
    /// Most connections that have not authenticated, in total.
    #[arg(long)]
    max_unauthenticated: Option<usize>,
    /// Most connections that have not authenticated, from one peer address.
    #[arg(long)]
    max_unauthenticated_per_address: Option<usize>,
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
    log_format: Option<crate::logging::Format>,
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
pub fn status_address(cfg: &Config) -> anyhow::Result<String> {
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
pub fn effective_config(args: &ServeArgs) -> anyhow::Result<Config> {
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
    if let Some(n) = args.max_unauthenticated {
        cfg.max_unauthenticated = n;
    }
    if let Some(n) = args.max_unauthenticated_per_address {
        cfg.max_unauthenticated_per_address = n;
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
