//! One scan, as the supervisor starts it: the catalog's sources, the shared map,
//! the static LUNs, and the LUN table built from them and published. It runs as a
//! task of its own, so nothing waits for it; the supervisor cancels it at its
//! limit (every S3 call in it also has its own deadline).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use tracing::{error, info};

use super::start::log_luns;
use super::supervisor::Outcome;
use crate::catalog::live::Builder;
use crate::catalog::scan::ScanMemory;
use crate::catalog::shared_map::MapError;
use crate::config::Config;
use crate::metrics::CatalogStats;
use crate::store::ServedLuns;

/// What persists from one scan to the next: the table builder (numbers, the last
/// good catalog, the shared map) and what the last scan learned.
pub struct Planner {
    pub builder: Builder,
    pub memory: ScanMemory,
}

/// Scan with `cfg`, build, and publish the table on `luns` when it changed.
pub async fn rescan(
    planner: Arc<Mutex<Planner>>,
    cfg: Config,
    luns: watch::Sender<Arc<ServedLuns>>,
    stats: Arc<CatalogStats>,
) -> Outcome {
    let mut guard = planner.lock().await;
    let p = &mut *guard;
    let mut degraded = false;
    if let (false, Some(client)) = (cfg.catalog.is_empty(), &p.builder.backends.s3) {
        let started = std::time::Instant::now();
        let scan =
            crate::catalog::scan(client, &cfg.catalog, &p.builder.previous(), &mut p.memory).await;
        stats.scan_duration.observe(started.elapsed());
        stats.record(&scan);
        degraded |= !scan.failed_sources.is_empty();
        p.builder.apply_scan(scan);
        let served = p.builder.catalog.len() as u64;
        stats.images.store(served, Ordering::Relaxed);
    }
    let current = luns.borrow().clone();
    let built = p.builder.build(&cfg, Some(&current), true).await;
    // A server that ignores conditional writes could let two instances give one
    // number to two images: stop. One that refuses those that must succeed only
    // keeps new images unnumbered: serve the numbers known (sync reports it).
    if let Some(e @ MapError::Ignored(_)) =
        p.builder.shared.as_ref().and_then(|s| s.refused.clone())
    {
        error!(error = %e, "refusing the shared LUN map: stopping");
        return Outcome::Fatal(e.to_string());
    }
    stats
        .unnumbered
        .store(p.builder.unnumbered as u64, Ordering::Relaxed);
    stats
        .static_unavailable
        .store(p.builder.static_unavailable as u64, Ordering::Relaxed);
    match built {
        Ok(new) => {
            if current.table.same_as(&new.table) {
                if current.retiring != new.retiring {
                    // Only what /status and the metrics report changed.
                    info!(retiring = ?new.retiring, "retiring LUNs changed");
                    luns.send_replace(Arc::new(current.with_retiring(new.retiring)));
                } else {
                    info!("LUNs unchanged");
                }
            } else {
                info!("LUNs changed");
                log_luns(&new);
                luns.send_replace(Arc::new(new));
            }
            Outcome::Built {
                luns: luns.borrow().len(),
                degraded: degraded || p.builder.static_unavailable > 0,
            }
        }
        Err(e) => {
            let e = format!("{e:#}");
            error!(error = e, "rebuild failed, keeping the current LUNs");
            Outcome::Failed(e)
        }
    }
}
