//! A Prometheus text endpoint (`metrics_listen`): sessions, cache and S3 counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

use super::Registry;
use crate::catalog::Scan;
use crate::store::cache::ChunkCache;
use crate::store::s3::S3Stats;

/// What the catalog's scans found.
#[derive(Debug, Default)]
pub struct CatalogStats {
    pub scans: AtomicU64,
    pub images: AtomicU64,
    pub luns: AtomicU64,
    pub skipped: AtomicU64,
    /// Problems by kind, over all scans.
    pub problems: Mutex<BTreeMap<&'static str, u64>>,
}

impl CatalogStats {
    pub fn record(&self, scan: &Scan) {
        self.scans.fetch_add(1, Ordering::Relaxed);
        self.images
            .store(scan.entries.len() as u64, Ordering::Relaxed);
        let skipped = scan.problems.iter().filter(|p| p.skipped).count() as u64;
        self.skipped.store(skipped, Ordering::Relaxed);
        let mut m = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        for p in &scan.problems {
            *m.entry(p.kind).or_default() += 1;
        }
    }

    pub fn set_luns(&self, n: usize) {
        self.luns.store(n as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub cache: Arc<ChunkCache>,
    pub s3: Option<Arc<S3Stats>>,
    pub catalog: Arc<CatalogStats>,
    pub serve: Arc<super::ServeStats>,
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut o = String::new();
        gauge(
            &mut o,
            "s3lun_sessions",
            "Logged-in sessions.",
            self.registry.len() as u64,
        );
        let c = &self.cache.stats;
        counter(
            &mut o,
            "s3lun_cache_memory_hits_total",
            "Chunks served from memory.",
            c.memory_hits.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "s3lun_cache_disk_hits_total",
            "Chunks served from the disk tier.",
            c.disk_hits.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "s3lun_cache_misses_total",
            "Chunks fetched from the backing store.",
            c.misses.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "s3lun_cache_fetched_bytes_total",
            "Bytes fetched into the cache.",
            c.fetched_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "s3lun_cache_evictions_total",
            "Chunks evicted from the disk tier.",
            c.evictions.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "s3lun_cache_corrupt_total",
            "Disk chunks that failed their CRC and were dropped.",
            c.corrupt.load(Ordering::Relaxed),
        );
        let (chunks, bytes) = self.cache.disk_usage();
        gauge(
            &mut o,
            "s3lun_cache_disk_chunks",
            "Chunks on disk.",
            chunks as u64,
        );
        gauge(&mut o, "s3lun_cache_disk_bytes", "Bytes on disk.", bytes);
        let cat = &self.catalog;
        counter(
            &mut o,
            "s3lun_catalog_scans_total",
            "Catalog scans.",
            cat.scans.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "s3lun_catalog_images",
            "Images the last scan would serve.",
            cat.images.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "s3lun_catalog_skipped_images",
            "Images the last scan skipped.",
            cat.skipped.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "s3lun_luns",
            "LUNs served.",
            cat.luns.load(Ordering::Relaxed),
        );
        let _ = writeln!(o, "# HELP s3lun_catalog_problems_total Manifest and image problems by kind.\n# TYPE s3lun_catalog_problems_total counter");
        for (kind, n) in cat
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(o, "s3lun_catalog_problems_total{{kind=\"{kind}\"}} {n}");
        }
        if let Some(s) = &self.s3 {
            counter(
                &mut o,
                "s3lun_s3_requests_total",
                "S3 requests (HEAD and GET).",
                s.requests.load(Ordering::Relaxed),
            );
            counter(
                &mut o,
                "s3lun_s3_gets_total",
                "S3 ranged GETs.",
                s.gets.load(Ordering::Relaxed),
            );
            counter(
                &mut o,
                "s3lun_s3_bytes_total",
                "Bytes received from S3.",
                s.bytes.load(Ordering::Relaxed),
            );
            counter(
                &mut o,
                "s3lun_s3_errors_total",
                "Failed S3 requests.",
                s.errors.load(Ordering::Relaxed),
            );
            counter(
                &mut o,
                "s3lun_s3_latency_microseconds_total",
                "Time spent in S3 reads.",
                s.latency_micros.load(Ordering::Relaxed),
            );
        }
        o
    }
}

/// Answer every HTTP request on `listener` with the metrics text.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection; what it asks for does not matter.
            if let Err(e) = sock.read(&mut buf).await {
                warn!(error = %e, "metrics request");
                return;
            }
            let body = m.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
