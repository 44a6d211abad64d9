//! What `/metrics` reports: every counter, gauge and histogram of the target in the
//! Prometheus text format, encoded by prometheus-client from the live counters at
//! each scrape. Per-LUN series carry the LUN number and image identity (one series
//! per LUN; nothing per initiator). The HTTP endpoint itself is [`http`].

pub mod format;
pub mod http;
pub mod status;

pub use http::{spawn, Access, MAX_CONNECTIONS};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::catalog::shared_map::MapStats;
use crate::catalog::Scan;
use crate::latency::{Encoded, Latency};
use crate::server::Target;
use crate::store::cache::ChunkCache;
use crate::store::s3::S3Stats;
use crate::store::ServedLuns;

/// What the catalog's scans found.
#[derive(Debug, Default)]
pub struct CatalogStats {
    pub scans: AtomicU64,
    pub images: AtomicU64,
    pub skipped: AtomicU64,
    /// Images the last build had no LUN number for.
    pub unnumbered: AtomicU64,
    /// Static S3 LUNs the last build could not HEAD (served from their last known
    /// version, cached bytes only, or not at all when never seen).
    pub static_unavailable: AtomicU64,
    /// Scans cancelled at their time limit, by a reload or by a stop.
    pub scans_abandoned: AtomicU64,
    /// 1 when the last scan could not read some source (its images kept as last
    /// known), else 0.
    pub last_scan_failed: AtomicU64,
    /// Problems by kind, over all scans.
    pub problems: Mutex<BTreeMap<&'static str, u64>>,
    /// How long scans take (listing, manifests, HEADs).
    pub scan_duration: Arc<Latency>,
}

impl CatalogStats {
    /// Take a scan's counts (the images served are set once it is applied). A
    /// source that could not be read keeps its last good images, and the gauges
    /// keep their last good values; `s3lun_catalog_last_scan_failed` says so.
    pub fn record(&self, scan: &Scan) {
        self.scans.fetch_add(1, Ordering::Relaxed);
        let failed = !scan.failed_sources.is_empty();
        self.last_scan_failed
            .store(u64::from(failed), Ordering::Relaxed);
        if !failed {
            let skipped = scan.problems.iter().filter(|p| p.skipped).count() as u64;
            self.skipped.store(skipped, Ordering::Relaxed);
        }
        let mut m = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        for p in &scan.problems {
            *m.entry(p.kind).or_default() += 1;
        }
    }
}

/// Everything the HTTP endpoint reports on (`/metrics`, `/readyz`, `/status`).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub target: Arc<Target>,
    pub cache: Arc<ChunkCache>,
    pub s3: Option<Arc<S3Stats>>,
    pub catalog: Arc<CatalogStats>,
    /// The shared LUN map, when one is configured.
    pub lunmap: Option<Arc<MapStats>>,
    /// Unix seconds the target started.
    pub started: u64,
    /// Per-LUN series for at most this many LUNs (the most read); totals always.
    pub lun_series: usize,
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(
        name,
        help,
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
    );
}

/// A counter family labelled by kind.
fn by_kind(r: &mut Registry, name: &str, help: &str, counts: &Mutex<BTreeMap<&'static str, u64>>) {
    let family = Family::<Vec<(String, String)>, Counter>::default();
    for (kind, n) in counts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        family
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc_by(*n);
    }
    r.register(name, help, family);
}

/// A gauge family from (labels, value) pairs.
fn labelled_gauges(
    r: &mut Registry,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) {
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    for (labels, v) in values {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        family
            .get_or_create(&labels)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    r.register(name, help, family);
}

impl Metrics {
    /// Why the target should get no new sessions now, if it should not: not yet
    /// listening with its LUNs, draining, or S3 LUNs served while S3 is unreachable.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.target.stats.ready.load(Ordering::Relaxed) {
            return Some("starting or draining");
        }
        let s3_luns = || {
            self.target
                .luns
                .borrow()
                .table
                .iter()
                .any(|l| l.info.identity.source.starts_with("s3://"))
        };
        match &self.s3 {
            Some(s) if !s.reachable() && s3_luns() => Some("S3 unreachable"),
            _ => None,
        }
    }

    /// Per-LUN READ counters, labelled by LUN number and image identity.
    fn per_lun(&self, r: &mut Registry, served: &ServedLuns) {
        let reads = Family::<Vec<(String, String)>, Counter>::default();
        let bytes = Family::<Vec<(String, String)>, Counter>::default();
        let errors = Family::<Vec<(String, String)>, Counter>::default();
        // The most read LUNs only: with thousands of LUNs, every series of every
        // LUN would make each scrape megabytes (the totals are always there).
        let mut all: Vec<_> = served.backings().collect();
        if all.len() > self.lun_series {
            all.sort_by_key(|(_, b)| std::cmp::Reverse(b.stats.reads.load(Ordering::Relaxed)));
            all.truncate(self.lun_series);
        }
        for (lun, b) in all {
            let labels = vec![
                ("lun".to_string(), lun.info.lun.to_string()),
                ("image".to_string(), lun.info.identity.source.clone()),
            ];
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            reads.get_or_create(&labels).inc_by(ld(&b.stats.reads));
            bytes.get_or_create(&labels).inc_by(ld(&b.stats.read_bytes));
            errors.get_or_create(&labels).inc_by(ld(&b.stats.errors));
        }
        r.register("s3lun_lun_reads", "READ commands per LUN", reads);
        r.register("s3lun_lun_read_bytes", "Bytes read per LUN", bytes);
        r.register(
            "s3lun_lun_read_errors",
            "READ commands answered with an error, per LUN",
            errors,
        );
    }

    /// A registry snapshot of every counter, encoded in the Prometheus text format
    /// (counters get their `_total` suffix from the encoder).
    pub fn render(&self) -> String {
        let mut r = Registry::default();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sessions = self.target.registry.sessions();
        gauge(
            &mut r,
            "s3lun_sessions",
            "Logged-in sessions",
            sessions.len() as u64,
        );
        let mut by_portal: BTreeMap<String, u64> = BTreeMap::new();
        for s in &sessions {
            *by_portal.entry(s.portal.to_string()).or_default() += 1;
        }
        labelled_gauges(
            &mut r,
            "s3lun_portal_sessions",
            "Logged-in sessions by the portal (our address) they logged in on",
            by_portal.into_iter().map(|(p, n)| (vec![("portal", p)], n)),
        );
        gauge(
            &mut r,
            "s3lun_ready",
            "1 when listening with its LUNs and not draining (as /readyz)",
            u64::from(self.target.stats.ready.load(Ordering::Relaxed)),
        );
        let sv = &self.target.stats;
        counter(
            &mut r,
            "s3lun_connections",
            "TCP connections accepted",
            ld(&sv.connections),
        );
        let gate = &self.target.gate;
        gauge(
            &mut r,
            "s3lun_open_connections",
            "TCP connections open",
            gate.open() as u64,
        );
        gauge(
            &mut r,
            "s3lun_unauthenticated_connections",
            "Connections open that have not completed an authenticated login",
            gate.unauthenticated() as u64,
        );
        counter(
            &mut r,
            "s3lun_unauthenticated_evicted",
            "Unauthenticated connections closed to make room (max_unauthenticated, max_connections)",
            ld(&gate.stats.evicted),
        );
        counter(
            &mut r,
            "s3lun_unauthenticated_dropped",
            "Connections closed unread: over an address's unauthenticated budget (max_unauthenticated_per_address)",
            ld(&gate.stats.dropped_unauthenticated),
        );
        counter(
            &mut r,
            "s3lun_scsi_commands",
            "SCSI commands received",
            ld(&sv.commands),
        );
        counter(
            &mut r,
            "s3lun_sent_bytes",
            "Bytes sent to initiators (PDUs, data included)",
            ld(&sv.bytes_sent),
        );
        r.register(
            "s3lun_read_latency_seconds",
            "SCSI READ service time: command in to data out (cache, disk or S3)",
            Encoded(Arc::clone(&sv.read_latency)),
        );
        let served = self.target.luns.borrow().clone();
        self.per_lun(&mut r, &served);
        let c = &self.cache.stats;
        counter(
            &mut r,
            "s3lun_cache_memory_hits",
            "Chunks served from memory",
            ld(&c.memory_hits),
        );
        counter(
            &mut r,
            "s3lun_cache_disk_hits",
            "Chunks served from the disk tier",
            ld(&c.disk_hits),
        );
        counter(
            &mut r,
            "s3lun_cache_misses",
            "Chunks fetched from the backing store",
            ld(&c.misses),
        );
        counter(
            &mut r,
            "s3lun_cache_fetched_bytes",
            "Bytes fetched into the cache",
            ld(&c.fetched_bytes),
        );
        counter(
            &mut r,
            "s3lun_cache_evictions",
            "Chunks evicted from the disk tier",
            ld(&c.evictions),
        );
        counter(
            &mut r,
            "s3lun_cache_demand_cuts",
            "Read-ahead streams cut so a reader's chunk came first",
            ld(&c.demand_cuts),
        );
        counter(
            &mut r,
            "s3lun_cache_profiles_used",
            "Boot profiles found in S3 and prefetched by",
            ld(&c.profiles_used),
        );
        counter(
            &mut r,
            "s3lun_cache_profiles_ignored",
            "Boot profiles found in S3 but ignored (garbage, stale or oversized)",
            ld(&c.profiles_ignored),
        );
        counter(
            &mut r,
            "s3lun_cache_corrupt",
            "Disk chunks that failed their CRC and were dropped",
            ld(&c.corrupt),
        );
        let (chunks, bytes) = self.cache.disk_usage();
        gauge(
            &mut r,
            "s3lun_cache_disk_chunks",
            "Chunks on disk",
            chunks as u64,
        );
        gauge(&mut r, "s3lun_cache_disk_bytes", "Bytes on disk", bytes);
        let cat = &self.catalog;
        counter(
            &mut r,
            "s3lun_catalog_scans",
            "Catalog scans",
            ld(&cat.scans),
        );
        gauge(
            &mut r,
            "s3lun_catalog_images",
            "Catalog images served (a source that could not be read keeps its last good images)",
            ld(&cat.images),
        );
        gauge(
            &mut r,
            "s3lun_catalog_last_scan_failed",
            "1 when the last scan could not read a source (its last good images kept), else 0",
            ld(&cat.last_scan_failed),
        );
        counter(
            &mut r,
            "s3lun_catalog_scans_abandoned",
            "Scans cancelled at their time limit, by a reload or by a stop",
            ld(&cat.scans_abandoned),
        );
        gauge(
            &mut r,
            "s3lun_static_luns_unavailable",
            "Static S3 LUNs whose object could not be read at the last scan (served from their last known version, cached bytes only, or not at all)",
            ld(&cat.static_unavailable),
        );
        gauge(
            &mut r,
            "s3lun_catalog_skipped_images",
            "Images the last scan skipped",
            ld(&cat.skipped),
        );
        gauge(&mut r, "s3lun_luns", "LUNs served", served.len() as u64);
        gauge(
            &mut r,
            "s3lun_catalog_unnumbered_images",
            "Catalog images with no LUN number (all 16,384 used or kept retired; or none in the shared map yet): not served",
            ld(&cat.unnumbered),
        );
        gauge(
            &mut r,
            "s3lun_retiring_luns",
            "LUNs kept for their readers after their image left the catalog",
            served.retiring.len() as u64,
        );
        by_kind(
            &mut r,
            "s3lun_catalog_problems",
            "Manifest and image problems by kind",
            &cat.problems,
        );
        r.register(
            "s3lun_catalog_scan_duration_seconds",
            "Catalog scan time",
            Encoded(Arc::clone(&cat.scan_duration)),
        );
        if let Some(m) = &self.lunmap {
            counter(
                &mut r,
                "s3lun_lunmap_syncs",
                "Reads (and writes) of the shared LUN map that succeeded",
                ld(&m.syncs),
            );
            by_kind(
                &mut r,
                "s3lun_lunmap_errors",
                "Shared LUN map failures by kind (unreachable, invalid_json, duplicate_number, ...)",
                &m.errors,
            );
        }
        if let Some(s) = &self.s3 {
            counter(
                &mut r,
                "s3lun_s3_requests",
                "S3 requests (HEAD, LIST and GET)",
                ld(&s.requests),
            );
            counter(
                &mut r,
                "s3lun_s3_gets",
                "S3 GETs (image ranges and manifests)",
                ld(&s.gets),
            );
            counter(&mut r, "s3lun_s3_heads", "S3 HEADs", ld(&s.heads));
            counter(&mut r, "s3lun_s3_lists", "S3 LIST pages", ld(&s.lists));
            counter(
                &mut r,
                "s3lun_s3_bytes",
                "Bytes received from S3",
                ld(&s.bytes),
            );
            counter(
                &mut r,
                "s3lun_s3_errors",
                "Failed S3 requests",
                ld(&s.errors),
            );
            counter(
                &mut r,
                "s3lun_s3_index_mismatches",
                "Chunks fetched from S3 that did not match the image's chunk digest index (fetched again, never served)",
                ld(&s.index_mismatches),
            );
            gauge(
                &mut r,
                "s3lun_s3_indexed_images",
                "Images whose chunk digest index is in use",
                ld(&s.indexed_images),
            );
            by_kind(
                &mut r,
                "s3lun_s3_bad_answers",
                "S3 GET answers refused, never cached, by kind (range_ignored, wrong_range, no_etag, other_etag, short_body, long_body)",
                &s.bad_answers,
            );
            // Base units (seconds), as Prometheus names them.
            r.register(
                "s3lun_s3_read_seconds",
                "Time spent in S3 reads",
                ConstCounter::new(ld(&s.latency_micros) as f64 / 1e6),
            );
            r.register(
                "s3lun_s3_get_latency_seconds",
                "S3 GET time to the answer's first byte",
                Encoded(Arc::clone(&s.get_latency)),
            );
            gauge(
                &mut r,
                "s3lun_s3_reachable",
                "0 when the last S3 request found no server and none answered since",
                u64::from(s.reachable()),
            );
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &r) {
            warn!(error = %e, "encoding metrics");
        }
        out
    }
}
