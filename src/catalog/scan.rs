//! One pass over the configured sources.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::warn;

use super::manifest;
use crate::config::CatalogConfig;
use crate::store::key::{content_key, ContentKey};
use crate::store::s3::{parse_url, ObjectInfo, S3Client};
use crate::store::StoreError;

/// Manifests are small; anything bigger is not one.
const MAX_MANIFEST: u64 = 1 << 20;

/// An image the catalog would serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Manifest image id, or object name under a prefix.
    pub image_id: String,
    /// "manifest", "ims" or "prefix".
    pub origin: &'static str,
    pub url: String,
    /// What the LIO-compatible identity is computed from.
    pub identity: String,
    pub info: ObjectInfo,
    pub key: ContentKey,
    /// Warnings: the image is served anyway.
    pub notes: Vec<String>,
}

/// Something wrong with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub image: String,
    /// Counter label: invalid_json, no_rootfs, missing_object, ...
    pub kind: &'static str,
    pub detail: String,
    /// Whether the image was skipped (else served with a warning).
    pub skipped: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub entries: Vec<Entry>,
    pub problems: Vec<Problem>,
    /// Sources that could not be read at all (S3 down): keep the previous set.
    pub failed_sources: Vec<String>,
}

impl Scan {
    fn problem(&mut self, image: &str, kind: &'static str, detail: String, skipped: bool) {
        warn!(image, kind, skipped, "{detail}");
        self.problems.push(Problem {
            image: image.to_string(),
            kind,
            detail,
            skipped,
        });
    }
}

/// One scan in progress: the result so far and what it has already seen.
struct Walk<'a> {
    s: Scan,
    client: &'a S3Client,
    previous: &'a HashMap<String, (String, u64)>,
    /// Rootfs URL -> image id serving it.
    by_url: BTreeMap<String, String>,
    /// Manifests already projected (by the bucket scan or IMS).
    seen: HashSet<(String, String)>,
}

/// Scan every source. `previous` maps URL to (content key, size) from the last scan,
/// to notice an object whose size changed under the same key (still being written).
pub async fn scan(
    client: &S3Client,
    cfg: &CatalogConfig,
    previous: &HashMap<String, (String, u64)>,
) -> Scan {
    let mut w = Walk {
        s: Scan::default(),
        client,
        previous,
        by_url: BTreeMap::new(),
        seen: HashSet::new(),
    };
    for bucket in &cfg.manifest_buckets {
        let keys = match client.list(bucket, "").await {
            Ok(k) => k,
            Err(e) => {
                warn!(bucket, error = %e, "cannot list manifests");
                w.s.failed_sources.push(format!("s3://{bucket}"));
                continue;
            }
        };
        let mut manifests: Vec<String> = keys
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with("/manifest.json") && k.matches('/').count() == 1)
            .collect();
        manifests.sort();
        for mkey in manifests {
            let image_id = mkey.trim_end_matches("/manifest.json").to_string();
            w.manifest(bucket, &mkey, &image_id, "manifest").await;
        }
    }
    if let Some(url) = &cfg.ims_url {
        match super::ims::manifests(url, cfg).await {
            Err(e) => {
                // The last good catalog stays served (a failed source keeps its set).
                w.s.problem("IMS", e.kind(), e.to_string(), false);
                w.s.failed_sources.push("ims".into());
            }
            Ok(list) => {
                for (image_id, murl) in list {
                    match parse_url(&murl) {
                        Some((bucket, key)) => w.manifest(&bucket, &key, &image_id, "ims").await,
                        None => {
                            let d = format!("manifest link {murl} is not s3://bucket/key");
                            w.s.problem(&image_id, "bad_path", d, true);
                        }
                    }
                }
            }
        }
    }
    for prefix_url in &cfg.prefixes {
        let Some((bucket, prefix)) = parse_prefix(prefix_url) else {
            let d = format!("{prefix_url} is not s3://bucket/prefix/");
            w.s.problem(prefix_url, "bad_prefix", d, true);
            continue;
        };
        let keys = match client.list(&bucket, &prefix).await {
            Ok(k) => k,
            Err(e) => {
                warn!(prefix = %prefix_url, error = %e, "cannot list prefix");
                w.s.failed_sources.push(prefix_url.clone());
                continue;
            }
        };
        for (key, _) in keys.into_iter().filter(|(k, _)| !k.ends_with('/')) {
            let url = format!("s3://{bucket}/{key}");
            let name = key.rsplit('/').next().unwrap_or(&key).to_string();
            w.image(&name, "prefix", &url, url.clone(), None, None)
                .await;
        }
    }
    w.s
}

fn parse_prefix(url: &str) -> Option<(String, String)> {
    let (bucket, prefix) = url.strip_prefix("s3://")?.split_once('/')?;
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix.to_string()))
}

impl Walk<'_> {
    /// Project one manifest (once): its rootfs artifact becomes an entry, or a
    /// problem says why not.
    async fn manifest(&mut self, bucket: &str, mkey: &str, image_id: &str, origin: &'static str) {
        if !self.seen.insert((bucket.to_string(), mkey.to_string())) {
            return;
        }
        let bytes = match self.client.get_small(bucket, mkey, MAX_MANIFEST).await {
            Ok(b) => b,
            Err(e) => {
                let d = format!("s3://{bucket}/{mkey}: {e}");
                self.s.problem(image_id, "manifest_unreadable", d, true);
                return;
            }
        };
        let rootfs = match manifest::rootfs(&bytes) {
            Ok(r) => r,
            Err(e) => {
                let d = format!("s3://{bucket}/{mkey}: {e}; image skipped");
                self.s.problem(image_id, e.kind(), d, true);
                return;
            }
        };
        for w in &rootfs.warnings {
            let detail = match *w {
                "missing_etag" => format!(
                    "{}: rootfs link has no etag (missing or null): content key from md5 or HEAD",
                    rootfs.path
                ),
                _ => format!("{}: rootfs artifact has no md5", rootfs.path),
            };
            self.s.problem(image_id, w, detail, false);
        }
        // The identity follows what boot parameters carry: path|etag as written.
        let identity = format!("{}|{}", rootfs.path, rootfs.etag.as_deref().unwrap_or(""));
        let (etag, md5) = (rootfs.etag.as_deref(), rootfs.md5.as_deref());
        self.image(image_id, origin, &rootfs.path, identity, etag, md5)
            .await;
    }

    /// HEAD one image and decide its content key; record it or the problem.
    async fn image(
        &mut self,
        image_id: &str,
        origin: &'static str,
        url: &str,
        identity: String,
        etag: Option<&str>,
        md5: Option<&str>,
    ) {
        let s = &mut self.s;
        if let Some(first) = self.by_url.get(url) {
            let d = format!("{url} is already served for image {first}");
            s.problem(image_id, "duplicate", d, true);
            return;
        }
        let Some((bucket, key)) = parse_url(url) else {
            s.problem(
                image_id,
                "bad_path",
                format!("{url} is not an s3:// URL"),
                true,
            );
            return;
        };
        let info = match self.client.head(&bucket, &key).await {
            Ok(i) => i,
            Err(StoreError::NotFound(_)) => {
                let d = format!("{url} does not exist (or is still being uploaded)");
                s.problem(image_id, "missing_object", d, true);
                return;
            }
            Err(e) => {
                s.problem(image_id, "object_unreadable", format!("{url}: {e}"), true);
                return;
            }
        };
        if info.size == 0 {
            s.problem(image_id, "empty_object", format!("{url} is empty"), true);
            return;
        }
        let key = match content_key(etag, md5, &info) {
            Ok(k) => k,
            Err(e) => {
                s.problem(image_id, "no_content_key", format!("{url}: {e}"), true);
                return;
            }
        };
        if let Some((prev_key, prev_size)) = self.previous.get(url) {
            if *prev_key == key.key && *prev_size != info.size {
                let d = format!(
                    "{url}: size changed from {prev_size} to {} under the same content key",
                    info.size
                );
                s.problem(image_id, "size_changed", d, true);
                return;
            }
        }
        let mut notes = Vec::new();
        if let (Some(why), Some(_)) = (&key.stale_manifest, etag) {
            // As the old agent: a rootfs whose ETag is not the one its manifest names
            // is not the image the manifest describes. It is not served.
            let d = format!("{url}: the manifest's etag is not the object's: {why}");
            s.problem(image_id, "etag_mismatch", d, true);
            return;
        }
        if let Some(why) = &key.stale_manifest {
            s.problem(
                image_id,
                "stale_manifest",
                format!("{url}: stale manifest: {why}"),
                false,
            );
            notes.push(format!("stale manifest: {why}"));
        }
        self.by_url.insert(url.to_string(), image_id.to_string());
        s.entries.push(Entry {
            image_id: image_id.to_string(),
            origin,
            url: url.to_string(),
            identity,
            info,
            key,
            notes,
        });
    }
}
