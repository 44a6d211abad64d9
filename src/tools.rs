//! Operator commands that run without the target: `cache stats|verify|purge`
//! inspect and clean the cache; `index` publishes an image's chunk digest index;
//! `lunmap` shows the shared map; `catalog` prints what would be served (`warm` is
//! in [`crate::warm`]).

use std::path::Path;

use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::ProgressBar;

use crate::assemble::Backends;
use crate::config::Config;
use crate::store::cache::ChunkCache;

/// `s3lun lunmap show|retire N`: the fleet's shared LUN map, and the one way a
/// number leaves its image.
pub async fn lunmap(cfg: &Config, retire: Option<u64>) -> anyhow::Result<()> {
    use crate::catalog::shared_map::SharedMap;
    let url = cfg
        .lunmap
        .s3
        .as_deref()
        .context("no shared LUN map: [lunmap] s3 is not set")?;
    let client = Backends::build(cfg, tokio::runtime::Handle::current())?
        .s3
        .context("[lunmap] s3 needs an [s3] section")?;
    let map = SharedMap::new(client, url)?;
    match retire {
        None => {
            let (numbers, etag) = map.read().await?;
            let mut by_number: Vec<(u64, &str)> = numbers
                .assigned
                .iter()
                .map(|(id, n)| (*n, id.as_str()))
                .collect();
            by_number.sort_unstable();
            println!(
                "{url} (ETag {})",
                etag.as_deref().unwrap_or("none: no map yet")
            );
            for (n, id) in by_number {
                println!("  LUN {n:<5} {id}");
            }
            println!("  retired: {:?}", numbers.retired);
        }
        Some(n) => {
            // The probe also learns how this server wants If-Match sent.
            map.probe().await?;
            match map.retire(n).await? {
                Some(id) => println!("LUN {n} retired (was {id}): instances not serving it drop it at their next scan"),
                None => println!("LUN {n} was retired already"),
            }
        }
    }
    Ok(())
}

/// Bytes read at once while indexing.
const INDEX_PIECE: u64 = 8 << 20;

/// `s3lun index`: the chunk digest index of an image (`s3://bucket/key`, read with
/// guarded ranged GETs, or a local file with the `etag` S3 gave it), written beside
/// it (`<key>.s3lun-index`) or to `output`.
pub async fn index(
    cfg: &Config,
    image: &str,
    chunk_size: u64,
    etag: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    use crate::store::index::{IndexBuilder, SUFFIX};
    use crate::store::s3::{parse_url, PutCondition};
    let mut b = IndexBuilder::new(chunk_size);
    let started = Instant::now();
    let (ix, s3) = match parse_url(image) {
        Some((bucket, key)) => {
            let client = Backends::build(cfg, tokio::runtime::Handle::current())?
                .s3
                .context("an s3:// image needs an [s3] section")?;
            let info = client.head(&bucket, &key).await?;
            let tag = info
                .etag
                .clone()
                .context("S3 gave no ETag: nothing to index against")?;
            if etag.is_some_and(|e| !crate::store::s3::same_etag(e, &tag)) {
                bail!("{image} is at ETag {tag}, not the one given");
            }
            let bar = ProgressBar::new(info.size);
            let mut off = 0;
            while off < info.size {
                let len = INDEX_PIECE.min(info.size - off) as usize;
                let data = client
                    .get_range(&bucket, &key, &tag, info.size, off, len)
                    .await
                    .with_context(|| format!("reading {image} at {off}"))?;
                b.update(&data);
                off += len as u64;
                bar.set_position(off);
            }
            bar.finish_and_clear();
            (
                b.finish(&tag),
                Some((client, bucket, format!("{key}{SUFFIX}"))),
            )
        }
        None => {
            let etag = etag.context(
                "a local image needs --etag: the ETag S3 gives it once uploaded (its md5 for a single PUT)",
            )?;
            use std::io::Read;
            let mut f = std::fs::File::open(image).with_context(|| format!("opening {image}"))?;
            let mut buf = vec![0u8; INDEX_PIECE as usize];
            loop {
                let n = f
                    .read(&mut buf)
                    .with_context(|| format!("reading {image}"))?;
                if n == 0 {
                    break;
                }
                b.update(&buf[..n]);
            }
            (b.finish(etag), None)
        }
    };
    let body = serde_json::to_vec_pretty(&ix)?;
    let dest = match (output, s3) {
        (Some(path), _) => {
            std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?;
            path.display().to_string()
        }
        (None, Some((client, bucket, key))) => {
            client
                .put_if(&bucket, &key, body.into(), PutCondition::Always)
                .await
                .with_context(|| format!("writing s3://{bucket}/{key}"))?;
            format!("s3://{bucket}/{key}")
        }
        (None, None) => {
            let path = format!("{image}{SUFFIX}");
            std::fs::write(&path, &body).with_context(|| format!("writing {path}"))?;
            path
        }
    };
    println!(
        "{dest}: {} chunks of {} bytes, ETag {}, sha256 {} ({:.1} s)",
        ix.chunks.len(),
        ix.chunk_size,
        ix.etag,
        ix.sha256,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cache_dir(cfg: &Config) -> anyhow::Result<std::path::PathBuf> {
    cfg.cache.settings().dir.context("no cache directory")
}

/// Per content key: chunks and bytes on disk.
pub fn cache_stats(cfg: &Config) -> anyhow::Result<()> {
    let dir = cache_dir(cfg)?;
    println!("cache {}", dir.display());
    let (mut total_chunks, mut total_bytes) = (0u64, 0u64);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten().filter(is_dir) {
            let key = std::fs::read_to_string(e.path().join("key")).unwrap_or_else(|_| "?".into());
            let (mut n, mut b) = (0u64, 0u64);
            for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().ends_with(".chunk") {
                    n += 1;
                    b += f.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
            println!("  {key:<48} {n:>8} chunks {b:>14} bytes");
            total_chunks += n;
            total_bytes += b;
        }
    }
    println!(
        "total {total_chunks} chunks, {total_bytes} bytes (bound {} bytes)",
        cfg.cache.max_bytes
    );
    Ok(())
}

/// Check every chunk's CRC; drop the bad ones.
pub fn cache_verify(cfg: &Config, runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    let cache = ChunkCache::new(cfg.cache.settings(), runtime);
    let (good, bad) = cache.verify();
    println!("verified: {good} good chunks, {bad} bad chunks removed");
    Ok(())
}

/// Remove cached chunks: all of them, or those of one image (its cache namespace,
/// its object URL or its ETag).
pub fn cache_purge(cfg: &Config, key: Option<&str>) -> anyhow::Result<()> {
    let dir = cache_dir(cfg)?;
    let mut removed = 0;
    for e in std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(is_dir)
    {
        let k = std::fs::read_to_string(e.path().join("key")).unwrap_or_default();
        if key.is_none_or(|want| crate::store::key::namespace_matches(&k, want)) {
            remove_dir(&e.path())?;
            removed += 1;
        }
    }
    println!("purged {removed} content keys from {}", dir.display());
    Ok(())
}

/// An image's directory in the cache (beside them: the cache's format file).
fn is_dir(e: &std::fs::DirEntry) -> bool {
    e.file_type().is_ok_and(|t| t.is_dir())
}

fn remove_dir(p: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}

/// Print what the catalog would serve, without starting the target: the tool to run
/// when a node fails to boot.
pub async fn catalog(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let backends = Backends::build(cfg, tokio::runtime::Handle::current())?;
    let client = backends
        .s3
        .clone()
        .context("the catalog needs an [s3] section")?;
    if cfg.catalog.is_empty() {
        bail!("no [catalog] manifest_buckets or prefixes configured");
    }
    // Numbers as the running target would give them; the state file is not written.
    let mut map = match &cfg.state_file {
        Some(p) => crate::catalog::lun_numbers::LunMap::load(p)?,
        None => crate::catalog::lun_numbers::LunMap::ephemeral(),
    };
    let previous = map
        .known
        .iter()
        .map(|k| (k.url.clone(), (k.content_key.clone(), k.size)))
        .collect();
    // With a shared map, its numbers (read, never written here); "new" for an image
    // the next write will number.
    let shared = match &cfg.lunmap.s3 {
        Some(url) => {
            let m = crate::catalog::shared_map::SharedMap::new(client.clone(), url)?;
            let (numbers, _) = m.read().await?;
            map.adopt(&numbers);
            true
        }
        None => false,
    };
    let scan =
        crate::catalog::scan(&client, &cfg.catalog, &previous, &mut Default::default()).await;
    if !shared {
        // Every new image numbered in one pass, as the running target does.
        let wanted: Vec<_> = scan
            .entries
            .iter()
            .map(|e| (e.identity.clone(), None))
            .collect();
        map.assign_all(&wanted);
    }
    let mut images = Vec::new();
    for e in &scan.entries {
        let lun = match shared {
            true => map.lookup(&e.identity, None)?,
            false => Some(map.assign(&e.identity, None)?),
        };
        images.push(serde_json::json!({
            "image": e.image_id,
            "origin": e.origin.as_str(),
            "lun": lun,
            "size": e.info.size,
            "content_key": e.key.key,
            "key_source": format!("{:?}", e.key.source),
            "wwid": crate::scsi::Identity::lio(&e.identity).wwid(),
            "object": e.url,
        }));
    }
    let now = crate::store::served::unix_now();
    let skipped = scan.problems.iter().filter(|p| p.skipped).count();
    if json {
        let out = serde_json::json!({
            "images": images,
            "problems": scan.problems.iter().map(|p| serde_json::json!({
                "image": p.image, "kind": p.kind, "detail": p.detail, "skipped": p.skipped,
            })).collect::<Vec<_>>(),
            "unreadable": scan.failed_sources.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            "retiring": map.retiring.iter().map(|r| serde_json::json!({
                "identity": r.identity, "lun": r.lun, "idle_secs": now.saturating_sub(r.last_read),
            })).collect::<Vec<_>>(),
            "served": scan.entries.len(),
            "skipped": skipped,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("IMAGE\tORIGIN\tLUN\tSIZE\tCONTENT KEY (SOURCE)\tWWID\tOBJECT");
    for i in &images {
        let lun = i["lun"]
            .as_u64()
            .map_or("new".to_string(), |n| n.to_string());
        println!(
            "{}\t{}\t{lun}\t{}\t{} ({})\t{}\t{}",
            i["image"].as_str().unwrap_or(""),
            i["origin"].as_str().unwrap_or(""),
            i["size"],
            i["content_key"].as_str().unwrap_or(""),
            i["key_source"].as_str().unwrap_or(""),
            i["wwid"].as_str().unwrap_or(""),
            i["object"].as_str().unwrap_or("")
        );
    }
    for p in &scan.problems {
        let what = if p.skipped { "SKIPPED" } else { "WARNING" };
        println!("{what}\t{}\t{}\t{}", p.image, p.kind, p.detail);
    }
    for f in &scan.failed_sources {
        println!("UNREADABLE\t{f}");
    }
    // As the running target last saved them: LUNs kept for their readers.
    for r in &map.retiring {
        let idle = now.saturating_sub(r.last_read);
        println!(
            "RETIRING\t{}\tLUN {}\tlast read {idle} s ago",
            r.identity, r.lun
        );
    }
    let skipped = scan.problems.iter().filter(|p| p.skipped).count();
    println!("{} images served, {skipped} skipped", scan.entries.len());
    Ok(())
}
