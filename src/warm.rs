//! `s3lun warm`: fill the block cache for S3 images ahead of a boot storm, the
//! static `[[lun]]`s and the catalog's images alike, under the same cache
//! namespaces the target reads them by.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use crate::assemble::{open_lun, open_s3, Backends, Opened};
use crate::config::{Config, LunConfig};

/// What `warm` was asked for: an s3:// URL, a configured identity, or a catalog
/// image id.
fn wanted(images: &[String], names: &[&str]) -> bool {
    images.is_empty() || images.iter().any(|i| names.contains(&i.as_str()))
}

/// Fill the cache for every S3 image of `cfg` (static and catalog), or just
/// `images` (by URL, identity or catalog image id).
pub async fn warm(cfg: &Config, images: &[String], parallel: usize) -> anyhow::Result<()> {
    let luns: Vec<LunConfig> = cfg
        .luns
        .iter()
        .filter(|l| l.s3.is_some())
        .filter(|l| {
            let url = l.s3.as_deref().unwrap_or_default();
            wanted(images, &[url, l.identity.as_deref().unwrap_or(url)])
        })
        .cloned()
        .collect();
    // Objects named by URL that are not configured: warmed as they are.
    let named: Vec<LunConfig> = images
        .iter()
        .filter(|i| i.starts_with("s3://") && !luns.iter().any(|l| l.s3.as_ref() == Some(*i)))
        .map(|i| LunConfig {
            s3: Some(i.clone()),
            ..LunConfig::default()
        })
        .collect();
    let mut with_s3 = cfg.clone();
    with_s3.luns = luns.iter().chain(&named).cloned().collect();
    let backends = Backends::build(&with_s3, tokio::runtime::Handle::current())?;
    let mut opened: Vec<(String, Opened)> = Vec::new();
    for l in &luns {
        let url = l.s3.clone().unwrap_or_default();
        opened.push((url, open_lun(l, &backends).await?));
    }
    if let (false, Some(client)) = (cfg.catalog.is_empty(), &backends.s3) {
        let scan = crate::catalog::scan(
            client,
            &cfg.catalog,
            &Default::default(),
            &mut Default::default(),
        )
        .await;
        for f in &scan.failed_sources {
            eprintln!("warning: catalog source {f} does not answer");
        }
        for e in scan.entries {
            if opened.iter().any(|(_, o)| o.identity == e.identity)
                || !wanted(images, &[&e.url, &e.identity, &e.image_id])
            {
                continue;
            }
            let o = open_s3(&e.url, &e.info, &e.key, e.identity.clone(), &backends)?;
            opened.push((e.url.clone(), o));
        }
    }
    for l in &named {
        let url = l.s3.clone().unwrap_or_default();
        if !opened.iter().any(|(u, _)| *u == url) {
            opened.push((url, open_lun(l, &backends).await?));
        }
    }
    if opened.is_empty() {
        bail!("no S3 images to warm (an image is an s3:// URL, a configured identity or a catalog image id)");
    }
    for (url, o) in opened {
        fill(&url, o, &backends, parallel).await?;
    }
    Ok(())
}

/// Fetch every chunk of one image into the cache, with a progress bar.
async fn fill(
    url: &str,
    opened: Opened,
    backends: &Backends,
    parallel: usize,
) -> anyhow::Result<()> {
    let store = opened.store;
    let cached = opened.cached.context("not an S3 image")?;
    let stats = &backends.cache.stats;
    let fetched_before = stats.fetched_bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    let pb = ProgressBar::new(store.size());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(url.to_string());
    let errors: usize = stream::iter(0..cached.chunk_count())
        .map(|i| cached.chunk_future(i))
        .buffer_unordered(parallel.max(1))
        .map(|r| match r {
            Ok(b) => {
                pb.inc(b.len() as u64);
                0
            }
            Err(e) => {
                pb.println(format!("error: {e}"));
                1
            }
        })
        .fold(0, |a, b| async move { a + b })
        .await;
    pb.finish_and_clear();
    let cache = Arc::clone(&backends.cache);
    let _ = tokio::task::spawn_blocking(move || cache.flush()).await;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let fetched = stats.fetched_bytes.load(Ordering::Relaxed) - fetched_before;
    println!(
        "warmed {url}: {} bytes in {secs:.1} s ({:.1} MB/s), {fetched} bytes fetched from S3, {errors} errors",
        store.size(),
        store.size() as f64 / secs / 1e6,
    );
    if errors > 0 {
        bail!("{errors} chunks of {url} could not be fetched");
    }
    Ok(())
}
