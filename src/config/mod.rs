//! Configuration: a TOML file, overridden by command-line flags. The defaults are
//! safe on a worker and serve the lab case: listen on loopback only (a worker's
//! addresses are named, never all of them), target name from the hostname.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

mod cache;
mod catalog;
mod chap;
mod lun;
mod s3;

pub use cache::CacheConfig;
pub use catalog::{CatalogConfig, LunMapConfig, DEFAULT_RETIRE_AFTER_SECS};
pub use chap::ChapConfig;
pub use lun::LunConfig;
pub use s3::S3Config;

use crate::login::{LoginSettings, NegotiationPrefs};
use crate::scsi::AccessState;
use crate::server::{ConnLimits, SessionLimits};
use crate::session::budget::{self, TargetBudget};
use crate::session::SessionSettings;

pub const DEFAULT_PORT: u16 = 3260;

fn secs_or_never(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// iSCSI qualified name; default `iqn.2023-06.csm.iscsi:<hostname>`.
    pub target_name: Option<String>,
    pub target_alias: Option<String>,
    /// Addresses to listen on (`ip:port`); default 127.0.0.1:3260 only. A worker
    /// names its management and high-speed network addresses: listening on every
    /// address would open the portal on networks that must not reach it.
    pub listen: Vec<String>,
    /// Addresses SendTargets advertises (`host:port`); default: the address the
    /// initiator connected to.
    pub advertise: Vec<String>,
    pub portal_group_tag: u16,
    /// ALUA target port group (and relative port) of this instance. Instances that
    /// serve the same images (one WWID, one path each) need different ones, or an
    /// initiator's ALUA handler takes them for one port group; default: derived from
    /// the host name (1..=65535).
    pub alua_port_group: Option<u16>,
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    /// Digests accepted, in order of preference: "None", "CRC32C".
    pub header_digest: Vec<String>,
    pub data_digest: Vec<String>,
    pub cmd_window: u32,
    pub phase_collapse: bool,
    /// Seconds of silence before a NOP-In ping; 0 disables pings.
    pub nop_interval_secs: u64,
    pub nop_timeout_secs: u64,
    pub login_timeout_secs: u64,
    /// Bounds on one login's or text request's keys and bytes.
    pub max_text_keys: usize,
    pub max_text_bytes: usize,
    /// Close a normal session after this many seconds without a command (NOPs do not
    /// count); 0 keeps it forever, as a booted node may stay idle for days.
    pub idle_timeout_secs: u64,
    /// The same for discovery sessions, which have no reason to linger.
    pub discovery_idle_timeout_secs: u64,
    /// Live sessions (normal and discovery), in total and per initiator name; logins
    /// beyond them get "out of resources" (status 0x0302), which initiators retry.
    pub max_sessions: usize,
    pub max_sessions_per_initiator: usize,
    /// Open TCP connections, in total and per peer address; beyond them a login is
    /// answered "out of resources", beyond twice them the connection is closed.
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Connections that have not completed an authenticated login, in total: past
    /// it (or past `max_connections`), the oldest of the address holding the most is
    /// closed to make room, never an authenticated session.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one address: past it a new one is closed
    /// unread.
    pub max_unauthenticated_per_address: usize,
    /// `/status` (session names, ISIDs, addresses) for any peer of `metrics_listen`;
    /// default: loopback peers only (the public listener serves health and metrics).
    pub public_status: bool,
    /// Per-LUN metric series for at most this many LUNs (the most read).
    pub metrics_lun_series: usize,
    /// A connection whose writes make no progress this long (a peer that stopped
    /// reading) is closed.
    pub write_timeout_secs: u64,
    /// Bytes one session may buffer for its initiator (commands held for a CmdSN
    /// gap, VERIFY data, text), and all sessions together.
    pub max_session_buffer_bytes: usize,
    pub max_buffer_bytes: usize,
    /// Initiator names allowed to log in (empty: everyone).
    pub allowed_initiators: Vec<String>,
    /// JSON file keeping LUN numbers stable across restarts (default: none, numbers
    /// live only as long as the process).
    pub state_file: Option<PathBuf>,
    /// CHAP for normal sessions.
    pub chap: Option<ChapConfig>,
    /// CHAP for discovery sessions (independent of `chap`).
    pub discovery_chap: Option<ChapConfig>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9360).
    pub metrics_listen: Option<String>,
    /// Unix socket for `s3lun admin` (ALUA state, drain); created mode 0600 in a
    /// directory only its owner may write, so only its owner (the service user) can
    /// steer the target. Never on the network. Default:
    /// `/run/s3lun/admin-<port of the first portal>.sock`, one per instance.
    pub admin_socket: Option<PathBuf>,
    /// Where a draining target sends new logins (`host:port` of peer workers); empty:
    /// they are refused as "service unavailable" and the initiator retries.
    pub redirect_to: Vec<String>,
    /// How long a drain (SIGTERM, `s3lun admin drain`) waits for sessions to log out
    /// before closing the rest and exiting.
    pub drain_timeout_secs: u64,
    /// The ALUA state a draining port group moves to: "active-non-optimized" (the
    /// default: multipath prefers other paths, a node with one path keeps reading),
    /// or "standby" / "unavailable" (media access refused: for multipath-only fleets,
    /// through a brief "transitioning").
    pub drain_state: String,
    /// "text" or "json" (one object per line, for log shippers).
    pub log_format: crate::logging::Format,
    pub s3: Option<S3Config>,
    pub cache: CacheConfig,
    /// Images projected from S3 manifests and prefixes.
    pub catalog: CatalogConfig,
    /// The fleet's shared LUN numbers.
    pub lunmap: LunMapConfig,
    #[serde(rename = "lun")]
    pub luns: Vec<LunConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let prefs = NegotiationPrefs::default();
        Config {
            target_name: None,
            target_alias: None,
            listen: vec![format!("127.0.0.1:{DEFAULT_PORT}")],
            advertise: Vec::new(),
            portal_group_tag: 1,
            alua_port_group: None,
            max_recv_data_segment_length: prefs.max_recv_data_segment,
            max_burst_length: prefs.max_burst,
            first_burst_length: prefs.first_burst,
            immediate_data: prefs.immediate_data,
            initial_r2t: prefs.initial_r2t,
            header_digest: prefs.header_digests,
            data_digest: prefs.data_digests,
            cmd_window: 128,
            phase_collapse: true,
            nop_interval_secs: 5,
            nop_timeout_secs: 15,
            login_timeout_secs: 5,
            idle_timeout_secs: 0,
            discovery_idle_timeout_secs: 60,
            max_text_keys: SessionSettings::default().max_keys,
            max_text_bytes: SessionSettings::default().max_text_bytes,
            max_sessions: SessionLimits::default().total,
            max_sessions_per_initiator: SessionLimits::default().per_initiator,
            max_connections: ConnLimits::default().total,
            max_connections_per_address: ConnLimits::default().per_address,
            max_unauthenticated: ConnLimits::default().unauthenticated,
            max_unauthenticated_per_address: ConnLimits::default().unauthenticated_per_address,
            public_status: false,
            metrics_lun_series: 64,
            write_timeout_secs: 30,
            max_session_buffer_bytes: budget::DEFAULT_SESSION_BYTES,
            max_buffer_bytes: budget::DEFAULT_TARGET_BYTES,
            allowed_initiators: Vec::new(),
            state_file: None,
            chap: None,
            discovery_chap: None,
            metrics_listen: None,
            admin_socket: None,
            redirect_to: Vec::new(),
            drain_timeout_secs: 30,
            drain_state: "active-non-optimized".into(),
            log_format: crate::logging::Format::Text,
            s3: None,
            cache: CacheConfig::default(),
            catalog: CatalogConfig::default(),
            lunmap: LunMapConfig::default(),
            luns: Vec::new(),
        }
    }
}

pub fn default_target_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().to_lowercase();
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    format!("iqn.2023-06.csm.iscsi:{host}")
}

fn check_digests(name: &str, list: &[String]) -> anyhow::Result<()> {
    if list.is_empty() {
        bail!("{name} must list at least one of None, CRC32C");
    }
    for d in list {
        if d != "None" && d != "CRC32C" {
            bail!("{name}: unknown digest {d:?} (None or CRC32C)");
        }
    }
    Ok(())
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    pub fn target_name(&self) -> String {
        self.target_name.clone().unwrap_or_else(default_target_name)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        check_digests("header_digest", &self.header_digest)?;
        check_digests("data_digest", &self.data_digest)?;
        let seg = 512..=16_777_215;
        for (name, v) in [
            (
                "max_recv_data_segment_length",
                self.max_recv_data_segment_length,
            ),
            ("max_burst_length", self.max_burst_length),
            ("first_burst_length", self.first_burst_length),
        ] {
            if !seg.contains(&v) {
                bail!("{name} = {v} is outside 512..=16777215");
            }
        }
        if self.cmd_window == 0 {
            bail!("cmd_window must be at least 1");
        }
        if self.listen.is_empty() {
            bail!("listen is empty: name the addresses to serve on (the management and high-speed networks' addresses of this host, e.g. listen = [\"10.252.1.9:3260\"])");
        }
        match AccessState::parse(&self.drain_state) {
            Some(
                AccessState::ActiveNonOptimized | AccessState::Standby | AccessState::Unavailable,
            ) => {}
            _ => bail!(
                "drain_state = {:?}: \"active-non-optimized\", \"standby\" or \"unavailable\"",
                self.drain_state
            ),
        }
        if self.drain_timeout_secs > u64::from(u16::MAX) {
            bail!("drain_timeout_secs is at most {}", u16::MAX);
        }
        if let Some(url) = &self.lunmap.s3 {
            if self.s3.is_none() {
                bail!("[lunmap] s3 = {url:?} needs an [s3] section");
            }
            if crate::store::s3::parse_url(url).is_none_or(|(_, k)| k.is_empty()) {
                bail!("[lunmap] s3 = {url:?} is not s3://bucket/key");
            }
        }
        Ok(())
    }

    /// `redirect_to` as TargetAddress values (with our portal group tag if none).
    pub fn redirect_addresses(&self) -> Vec<String> {
        self.redirect_to
            .iter()
            .map(|a| match a.contains(',') {
                true => a.clone(),
                false => format!("{a},{}", self.portal_group_tag),
            })
            .collect()
    }

    /// This instance's ALUA port group: configured, or a hash of the host name.
    pub fn port_group(&self) -> u16 {
        if let Some(id) = self.alua_port_group {
            return id;
        }
        let host = gethostname::gethostname();
        let h = crc32c::crc32c(host.as_encoded_bytes());
        (h % 0xffff) as u16 + 1
    }

    /// The ALUA state a drain ends in (validated by `validate`).
    pub fn drain_access(&self) -> AccessState {
        AccessState::parse(&self.drain_state).unwrap_or(AccessState::ActiveNonOptimized)
    }

    pub fn login_settings(&self) -> anyhow::Result<LoginSettings> {
        let mut s = LoginSettings::new(self.target_name());
        if let Some(c) = &self.chap {
            s.chap = c.policy()?;
        }
        if let Some(c) = &self.discovery_chap {
            s.discovery_chap = c.policy()?;
        }
        s.allowed_initiators = self.allowed_initiators.clone();
        s.target_alias = self.target_alias.clone();
        s.portal_group_tag = self.portal_group_tag;
        s.cmd_window = self.cmd_window;
        s.max_keys = self.max_text_keys.max(16);
        s.max_text_bytes = self.max_text_bytes.max(8192);
        s.prefs = NegotiationPrefs {
            header_digests: self.header_digest.clone(),
            data_digests: self.data_digest.clone(),
            max_recv_data_segment: self.max_recv_data_segment_length,
            max_burst: self.max_burst_length,
            first_burst: self.first_burst_length,
            initial_r2t: self.initial_r2t,
            immediate_data: self.immediate_data,
            ..NegotiationPrefs::default()
        };
        Ok(s)
    }

    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            cmd_window: self.cmd_window,
            phase_collapse: self.phase_collapse,
            nop_interval: secs_or_never(self.nop_interval_secs),
            nop_timeout: Duration::from_secs(self.nop_timeout_secs.max(1)),
            login_timeout: Duration::from_secs(self.login_timeout_secs.max(1)),
            idle_timeout: secs_or_never(self.idle_timeout_secs),
            max_keys: self.max_text_keys.max(16),
            max_text_bytes: self.max_text_bytes.max(8192),
            discovery_idle_timeout: secs_or_never(self.discovery_idle_timeout_secs),
            write_timeout: Duration::from_secs(self.write_timeout_secs.max(1)),
            session_buffer_bytes: self.max_session_buffer_bytes,
            target_budget: TargetBudget::new(self.max_buffer_bytes),
        }
    }

    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            total: self.max_sessions,
            per_initiator: self.max_sessions_per_initiator,
        }
    }

    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            total: self.max_connections,
            per_address: self.max_connections_per_address,
            unauthenticated: self.max_unauthenticated,
            unauthenticated_per_address: self.max_unauthenticated_per_address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every TOML example in the README parses, with no unknown key.
    #[test]
    fn readme_and_docs_examples_parse() {
        let docs = [
            ("README.md", include_str!("../../README.md")),
            (
                "docs/configuration.md",
                include_str!("../../docs/configuration.md"),
            ),
            ("docs/fleet.md", include_str!("../../docs/fleet.md")),
            (
                "docs/operations.md",
                include_str!("../../docs/operations.md"),
            ),
            ("docs/security.md", include_str!("../../docs/security.md")),
        ];
        let mut n = 0;
        for (name, doc) in docs {
            for block in doc.split("```toml\n").skip(1) {
                let text = block.split("```").next().unwrap_or_default();
                if let Err(e) = toml::from_str::<Config>(text) {
                    panic!("{name}: example does not parse: {e}\n{text}");
                }
                n += 1;
            }
        }
        assert!(n >= 5, "{n} examples");
    }

    #[test]
    fn parses_a_full_config() {
        let c: Config = toml::from_str(
            r#"
            target_name = "iqn.2023-06.csm.iscsi:w001"
            listen = ["127.0.0.1:3260", "[::1]:3260"]
            advertise = ["10.1.0.5:3260"]
            header_digest = ["CRC32C"]
            nop_interval_secs = 0
            [[lun]]
            path = "/images/a.squashfs"
            lun = 4
            identity = "s3://boot-images/PE/a.squashfs"
            [[lun]]
            path = "/images/b.squashfs"
            [[lun]]
            s3 = "s3://boot-images/PE/x.squashfs"
            [s3]
            endpoint = "http://10.0.0.1:8080"
            access_key = "a"
            secret_key = "b"
            [cache]
            chunk_size = 2097152
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.luns.len(), 3);
        assert_eq!(c.cache.settings().chunk_size, 2 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = crate::assemble::Backends::build(&c, rt.handle().clone()).unwrap();
        assert!(b.s3.is_some());
        assert_eq!(c.luns[0].lun, Some(4));
        assert_eq!(c.session_settings().nop_interval, None);
        assert_eq!(
            c.login_settings().unwrap().prefs.header_digests,
            vec!["CRC32C"]
        );
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let bad = Config {
            header_digest: vec!["MD5".into()],
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn s3_credentials_precedence_and_passwd_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("passwd-s3fs");
        std::fs::write(&pw, "# s3fs\nboot-images:AKIDFILE:SECRETFILE\n").unwrap();
        let mut c = S3Config {
            passwd_file: Some(pw.clone()),
            ..S3Config::default()
        };
        assert_eq!(
            c.credentials_with(None).unwrap(),
            ("AKIDFILE".into(), "SECRETFILE".into())
        );
        let env = Some(("AKIDENV".to_string(), "SECRETENV".to_string()));
        assert_eq!(c.credentials_with(env.clone()).unwrap().0, "AKIDENV");
        c.access_key = Some("AKIDCFG".into());
        c.secret_key = Some("SECRETCFG".into());
        assert_eq!(c.credentials_with(env).unwrap().0, "AKIDCFG");
        std::fs::write(&pw, "AK2:SK2\n").unwrap();
        let c = S3Config {
            passwd_file: Some(pw),
            ..S3Config::default()
        };
        assert_eq!(
            c.credentials_with(None).unwrap(),
            ("AK2".into(), "SK2".into())
        );
        assert!(S3Config::default().credentials_with(None).is_err());
        // Secrets stay out of Debug output.
        let shown = format!(
            "{:?}",
            S3Config {
                secret_key: Some("hunter2".into()),
                ..S3Config::default()
            }
        );
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn default_name_uses_hostname() {
        assert!(Config::default()
            .target_name()
            .starts_with("iqn.2023-06.csm.iscsi:"));
    }
}
