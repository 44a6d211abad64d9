//! `s3lun profile show|drop IMAGE`: an operator's look at the boot profile the fleet
//! shares for an image (what the first boots read, in order), and its removal (the
//! next worker to serve the image records a new one).

use anyhow::{bail, Context};

use crate::assemble::Backends;
use crate::cli::Output;
use crate::config::Config;
use crate::store::cache::profile::Profile;
use crate::store::key::cache_namespace;
use crate::store::s3::parse_url;
use crate::store::s3::profiles::S3Profiles;

/// The profile object of `image` (an s3:// URL at its current ETag) and the image's
/// namespace and size.
async fn locate(cfg: &Config, image: &str) -> anyhow::Result<(S3Profiles, String, u64)> {
    let (bucket, key) = parse_url(image).with_context(|| format!("not an s3:// URL: {image}"))?;
    let client = Backends::build(cfg, tokio::runtime::Handle::current())?
        .s3
        .context("an s3:// image needs an [s3] section")?;
    let info = client.head(&bucket, &key).await?;
    let ns = cache_namespace(image, &info).context("S3 gave no ETag for the image")?;
    Ok((S3Profiles::new(client, &bucket, &ns), ns, info.size))
}

pub async fn show(cfg: &Config, image: &str, output: Output) -> anyhow::Result<()> {
    use crate::store::cache::profile::ProfileStore;
    let (store, ns, size) = locate(cfg, image).await?;
    let Some(bytes) = store.get().await? else {
        bail!("{image} has no boot profile ({})", store.name());
    };
    let max = cfg.cache.settings().profiles.max_bytes;
    let p = Profile::parse(&bytes, &ns, size, max)
        .with_context(|| format!("{} is not usable: workers ignore it", store.name()))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
        Output::Text => {
            println!("profile    {}", store.name());
            println!("image      {ns}");
            println!("recorded   by {} over {} s", p.recorded_by, p.recorded_secs);
            println!(
                "extents    {} ({:.1} MB, {:.2}% of the image)",
                p.extents.len(),
                p.bytes() as f64 / 1e6,
                p.bytes() as f64 * 100.0 / size.max(1) as f64
            );
            for [offset, len] in p.extents.iter().take(10) {
                println!("  {offset:>16} +{len}");
            }
            if p.extents.len() > 10 {
                println!("  ... {} more", p.extents.len() - 10);
            }
        }
    }
    Ok(())
}

pub async fn drop(cfg: &Config, image: &str) -> anyhow::Result<()> {
    use crate::store::cache::profile::ProfileStore;
    let (store, _, _) = locate(cfg, image).await?;
    store.delete().await?;
    eprintln!(
        "{} removed: the next worker to serve {image} records a new one",
        store.name()
    );
    Ok(())
}
