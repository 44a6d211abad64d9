//! `/status`: a snapshot of who is connected to what, as JSON, and `s3lun status`,
//! which fetches it and draws it as a tree an operator reads at a glance (the view
//! `targetcli ls` gave of the old target).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Metrics;
use crate::store::served::unix_now;
use crate::store::Health;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub target: TargetStatus,
    pub sessions: Vec<SessionStatus>,
    pub luns: Vec<LunStatus>,
    pub cache: CacheStatus,
    /// Absent when no `[s3]` is configured.
    pub s3: Option<S3Status>,
    pub catalog: CatalogStatus,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub version: String,
    pub uptime_secs: u64,
    pub ready: bool,
    /// Why not, when not ready.
    pub not_ready: Option<String>,
    pub draining: bool,
    pub alua_state: String,
    pub alua_port_group: u16,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionStatus {
    pub initiator: String,
    /// Hex, as iscsiadm shows it.
    pub isid: String,
    pub tsih: u16,
    /// "normal" or "discovery".
    #[serde(rename = "type")]
    pub kind: String,
    pub peer: String,
    pub portal: String,
    /// Unix seconds.
    pub login_time: u64,
    pub luns: Vec<u64>,
    pub reads: u64,
    pub read_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LunStatus {
    pub lun: u64,
    pub identity: String,
    pub wwid: String,
    /// "file", "s3" (a `[[lun]]`) or "catalog".
    pub origin: String,
    pub size: u64,
    pub content_key: Option<String>,
    /// Share of its chunks in the cache (memory or disk); absent for local files.
    pub cached_fraction: Option<f64>,
    /// "ok", "stale" (the object changed), "not-ready" (deleted) or "retiring"
    /// (left the catalog, kept for its readers).
    pub state: String,
    pub sessions: u64,
    pub reads: u64,
    pub read_bytes: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CacheStatus {
    pub memory_limit_bytes: u64,
    pub disk_limit_bytes: u64,
    pub disk_bytes: u64,
    pub disk_chunks: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    pub fetched_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct S3Status {
    pub reachable: bool,
    /// Seconds since S3 last answered a request (absent: never asked yet).
    pub last_answer_secs_ago: Option<u64>,
    pub requests: u64,
    pub gets: u64,
    pub bytes: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CatalogStatus {
    pub scans: u64,
    pub images: u64,
    pub skipped: u64,
    pub retiring: u64,
    pub problems: BTreeMap<String, u64>,
}

fn ld(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Status {
    /// The target as it is now.
    pub fn of(m: &Metrics) -> Status {
        let now = unix_now();
        let t = &m.target;
        let control = t.control.borrow().clone();
        let sessions = t.registry.sessions();
        let mut readers: BTreeMap<u64, u64> = BTreeMap::new();
        let sessions = sessions
            .iter()
            .map(|s| {
                let luns = s.luns();
                for l in &luns {
                    *readers.entry(*l).or_default() += 1;
                }
                SessionStatus {
                    initiator: s.initiator.clone(),
                    isid: hex::encode(s.isid),
                    tsih: s.tsih,
                    kind: if s.discovery { "discovery" } else { "normal" }.into(),
                    peer: s.peer.to_string(),
                    portal: s.portal.to_string(),
                    login_time: s.login_time,
                    luns,
                    reads: ld(&s.reads),
                    read_bytes: ld(&s.read_bytes),
                }
            })
            .collect();
        let served = t.luns.borrow().clone();
        let luns = served
            .backings()
            .map(|(lun, b)| {
                let st = b.store.status();
                let n = lun.info.lun;
                let state = if served.retiring.contains(&n) {
                    "retiring"
                } else {
                    match st.health {
                        Health::Ok => "ok",
                        Health::Stale => "stale",
                        Health::NotReady => "not-ready",
                    }
                };
                let source = &lun.info.identity.source;
                let origin = match (b.from_catalog(), source.starts_with("s3://")) {
                    (true, _) => "catalog",
                    (false, true) => "s3",
                    (false, false) => "file",
                };
                LunStatus {
                    lun: n,
                    identity: source.clone(),
                    wwid: lun.info.identity.wwid(),
                    origin: origin.into(),
                    size: lun.info.size_bytes,
                    content_key: st.content_key,
                    cached_fraction: st.cached.map(|(have, all)| {
                        if all == 0 {
                            1.0
                        } else {
                            have as f64 / all as f64
                        }
                    }),
                    state: state.into(),
                    sessions: readers.get(&n).copied().unwrap_or(0),
                    reads: ld(&b.stats.reads),
                    read_bytes: ld(&b.stats.read_bytes),
                    errors: ld(&b.stats.errors),
                }
            })
            .collect();
        let c = &m.cache.stats;
        let (chunks, bytes) = m.cache.disk_usage();
        let cache = CacheStatus {
            memory_limit_bytes: m.cache.settings.memory_bytes,
            disk_limit_bytes: if m.cache.disk_enabled() {
                m.cache.settings.max_disk_bytes
            } else {
                0
            },
            disk_bytes: bytes,
            disk_chunks: chunks as u64,
            memory_hits: ld(&c.memory_hits),
            disk_hits: ld(&c.disk_hits),
            misses: ld(&c.misses),
            fetched_bytes: ld(&c.fetched_bytes),
        };
        let s3 = m.s3.as_ref().map(|s| {
            let last = ld(&s.last_answer);
            S3Status {
                reachable: s.reachable(),
                last_answer_secs_ago: (last > 0).then(|| now.saturating_sub(last / 1000)),
                requests: ld(&s.requests),
                gets: ld(&s.gets),
                bytes: ld(&s.bytes),
                errors: ld(&s.errors),
            }
        });
        let cat = &m.catalog;
        let catalog = CatalogStatus {
            scans: ld(&cat.scans),
            images: ld(&cat.images),
            skipped: ld(&cat.skipped),
            retiring: served.retiring.len() as u64,
            problems: cat
                .problems
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        };
        let not_ready = m.not_ready();
        Status {
            target: TargetStatus {
                name: t.port.target_name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: now.saturating_sub(m.started),
                ready: not_ready.is_none(),
                not_ready: not_ready.map(str::to_string),
                draining: control.draining,
                alua_state: control.access.to_string(),
                alua_port_group: t.port.group_id,
            },
            sessions,
            luns,
            cache,
            s3,
            catalog,
        }
    }
}

/// Bytes in the largest binary unit that keeps the number readable.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{bytes} B"),
        _ => format!("{v:.1} {}", UNITS[u]),
    }
}

/// Seconds as the largest whole unit or two ("3d 4h", "12m 5s").
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

impl Status {
    /// The tree `s3lun status` prints.
    pub fn tree(&self) -> String {
        let mut o = String::new();
        let t = &self.target;
        let ready = match &t.not_ready {
            None => "ready".to_string(),
            Some(why) => format!("NOT READY ({why})"),
        };
        let _ = writeln!(
            o,
            "o- {} [s3lun {}, up {}, {ready}, ALUA {} in group {}{}]",
            t.name,
            t.version,
            age(t.uptime_secs),
            t.alua_state,
            t.alua_port_group,
            if t.draining { ", DRAINING" } else { "" }
        );
        let _ = writeln!(o, "  o- luns [{} LUNs]", self.luns.len());
        for l in &self.luns {
            let cached = l
                .cached_fraction
                .map_or(String::new(), |f| format!(", {:.0}% cached", f * 100.0));
            let key = l.content_key.as_deref().unwrap_or("-");
            let _ = writeln!(
                o,
                "  | o- lun{} {} [{}, {}, {}{cached}, {} sessions, {} read, {} errors]",
                l.lun,
                l.identity,
                l.state,
                l.origin,
                human(l.size),
                l.sessions,
                human(l.read_bytes),
                l.errors
            );
            let _ = writeln!(o, "  |   wwid {} key {key}", l.wwid);
        }
        let _ = writeln!(o, "  o- sessions [{} sessions]", self.sessions.len());
        let now = unix_now();
        for s in &self.sessions {
            let luns: Vec<String> = s.luns.iter().map(|l| format!("lun{l}")).collect();
            let _ = writeln!(
                o,
                "  | o- {} [{}, isid {}, tsih {}, {} -> {}, up {}, {} read{}{}]",
                s.initiator,
                s.kind,
                s.isid,
                s.tsih,
                s.peer,
                s.portal,
                age(now.saturating_sub(s.login_time)),
                human(s.read_bytes),
                if luns.is_empty() { "" } else { ", " },
                luns.join(" ")
            );
        }
        let c = &self.cache;
        let _ = writeln!(
            o,
            "  o- cache [disk {} of {} in {} chunks, memory {}; hits {} memory {} disk, {} misses, {} fetched]",
            human(c.disk_bytes),
            human(c.disk_limit_bytes),
            c.disk_chunks,
            human(c.memory_limit_bytes),
            c.memory_hits,
            c.disk_hits,
            c.misses,
            human(c.fetched_bytes)
        );
        if let Some(s) = &self.s3 {
            let last = s
                .last_answer_secs_ago
                .map_or("never asked".to_string(), |a| {
                    format!("answered {} ago", age(a))
                });
            let _ = writeln!(
                o,
                "  o- s3 [{}, {last}; {} requests, {} GETs, {}, {} errors]",
                if s.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                },
                s.requests,
                s.gets,
                human(s.bytes),
                s.errors
            );
        }
        let k = &self.catalog;
        let problems: Vec<String> = k.problems.iter().map(|(p, n)| format!("{p} {n}")).collect();
        let _ = writeln!(
            o,
            "  o- catalog [{} scans, {} images, {} skipped, {} retiring{}{}]",
            k.scans,
            k.images,
            k.skipped,
            k.retiring,
            if problems.is_empty() {
                ""
            } else {
                "; problems: "
            },
            problems.join(", ")
        );
        o
    }
}

/// `GET /status` from a running target's HTTP listener (`host:port`).
pub fn fetch(addr: &str) -> anyhow::Result<String> {
    let url = format!("http://{addr}/status");
    let body = ureq::get(&url)
        .timeout(std::time::Duration::from_secs(10))
        .call()
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?
        .into_string()?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_at_a_glance() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(age(59), "59s");
        assert_eq!(age(3 * 86400 + 7200), "3d 2h");
    }
}
