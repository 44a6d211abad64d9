//! The HTTP endpoint (`metrics_listen`): Prometheus text encoded by
//! prometheus-client (sessions, commands, bytes, cache, S3 and catalog counters) at
//! `/metrics`, liveness at `/healthz`, readiness at `/readyz`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::catalog::shared_map::MapStats;
use crate::catalog::Scan;
use crate::server::{self, Registry as Sessions};
use crate::store::cache::ChunkCache;
use crate::store::s3::S3Stats;

/// What the catalog's scans found.
#[derive(Debug, Default)]
pub struct CatalogStats {
    pub scans: AtomicU64,
    pub images: AtomicU64,
    pub luns: AtomicU64,
    pub skipped: AtomicU64,
    /// LUNs kept for their readers after their image left the catalog.
    pub retiring: AtomicU64,
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

    /// What the last build serves, and how many of those are retiring.
    pub fn set_luns(&self, n: usize, retiring: usize) {
        self.luns.store(n as u64, Ordering::Relaxed);
        self.retiring.store(retiring as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Arc<Sessions>,
    pub cache: Arc<ChunkCache>,
    pub s3: Option<Arc<S3Stats>>,
    pub catalog: Arc<CatalogStats>,
    pub serve: Arc<server::ServeStats>,
    /// The shared LUN map, when one is configured.
    pub lunmap: Option<Arc<MapStats>>,
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

impl Metrics {
    /// A registry snapshot of every counter, encoded in the Prometheus text format
    /// (counters get their `_total` suffix from the encoder).
    pub fn render(&self) -> String {
        let mut r = Registry::default();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut r,
            "s3lun_sessions",
            "Logged-in sessions",
            self.registry.len() as u64,
        );
        let sv = &self.serve;
        counter(
            &mut r,
            "s3lun_connections",
            "TCP connections accepted",
            ld(&sv.connections),
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
            "Images the last scan would serve",
            ld(&cat.images),
        );
        gauge(
            &mut r,
            "s3lun_catalog_skipped_images",
            "Images the last scan skipped",
            ld(&cat.skipped),
        );
        gauge(&mut r, "s3lun_luns", "LUNs served", ld(&cat.luns));
        gauge(
            &mut r,
            "s3lun_retiring_luns",
            "LUNs kept for their readers after their image left the catalog",
            ld(&cat.retiring),
        );
        by_kind(
            &mut r,
            "s3lun_catalog_problems",
            "Manifest and image problems by kind",
            &cat.problems,
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
            counter(&mut r, "s3lun_s3_gets", "S3 ranged GETs", ld(&s.gets));
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
                "s3lun_s3_latency_microseconds",
                "Time spent in S3 reads",
                ld(&s.latency_micros),
            );
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &r) {
            warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Connections the metrics listener serves at once; more are closed unread. A
/// scraper needs one; the bound keeps idle or hostile peers from taking descriptors
/// the iSCSI listener needs.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a metrics client gets to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The request line of one HTTP request: the path asked for.
fn requested_path(req: &[u8]) -> Option<&str> {
    let line = req.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path),
        _ => None,
    }
}

/// Answer one request: `GET /metrics` gets the text, anything else 404.
async fn answer(mut sock: TcpStream, metrics: Metrics) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut have = 0;
    // Read until the end of the headers (or the buffer is full), within the timeout.
    let read = async {
        while have < buf.len() && !buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf[have..]).await?;
            if n == 0 {
                break;
            }
            have += n;
        }
        Ok::<_, std::io::Error>(())
    };
    timeout(IO_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let path = requested_path(&buf[..have]).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        // Alive: the process answers.
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        // Ready for new sessions: listening with its LUNs, not draining.
        "/readyz" if metrics.serve.ready.load(Ordering::Relaxed) => {
            ("200 OK", "text/plain", "ready\n".to_string())
        }
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", String::new()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    timeout(IO_TIMEOUT, sock.write_all(resp.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer timed out"))?
}

/// Serve metrics on `listener`: at most [`MAX_CONNECTIONS`] at once, each bounded by
/// [`IO_TIMEOUT`], accept errors (out of descriptors) backed off.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (sock, peer) = server::accept(&listener).await;
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            debug!(%peer, "metrics connection refused: {MAX_CONNECTIONS} open");
            continue;
        }
        let m = metrics.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            if let Err(e) = answer(sock, m).await {
                debug!(%peer, error = %e, "metrics request");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::requested_path;

    #[test]
    fn request_line() {
        assert_eq!(
            requested_path(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(requested_path(b"POST /metrics HTTP/1.1\r\n"), None);
        assert_eq!(requested_path(b"\xff\xfe"), None);
        assert_eq!(requested_path(b""), None);
    }
}
