//! One pass over the configured sources.

use std::collections::{HashMap, HashSet};

use tracing::warn;

use futures::StreamExt;

use super::manifest::{self, ManifestError, Rootfs};
use crate::config::CatalogConfig;
use crate::store::key::{content_key, ContentKey};
use crate::store::s3::{parse_url, Listed, ObjectInfo, S3Client};
use crate::store::served::Origin;
use crate::store::StoreError;

/// Manifests are small; anything bigger is not one.
const MAX_MANIFEST: u64 = 1 << 20;

/// An image the catalog would serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Manifest image id, or object name under a prefix.
    pub image_id: String,
    pub origin: Origin,
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
    pub failed_sources: Vec<Source>,
}

/// A catalog source, as a failed scan names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A manifest bucket.
    Bucket(String),
    /// A prefix URL (`s3://bucket/prefix/`).
    Prefix(String),
    Ims,
}

impl Source {
    /// Whether an image of `origin` at `url` may have come from this source: while
    /// the source cannot be read, such images are kept as last seen. A manifest
    /// names its rootfs anywhere, so a failed manifest bucket keeps every manifest
    /// image (more kept for a while, never one dropped).
    pub fn covers(&self, origin: Origin, url: &str) -> bool {
        match self {
            Source::Bucket(_) => origin == Origin::Manifest,
            Source::Prefix(p) => origin == Origin::Prefix && url.starts_with(p.as_str()),
            Source::Ims => origin == Origin::Ims,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bucket(b) => write!(f, "s3://{b}"),
            Source::Prefix(p) => f.write_str(p),
            Source::Ims => f.write_str("ims"),
        }
    }
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

/// Requests a scan keeps in flight at once (manifest GETs, HEADs).
pub const MAX_IN_FLIGHT: usize = 16;

/// What earlier scans learned, so that a scan costs what changed: a manifest is read
/// again only when its ETag (from the bucket listing, or IMS's link) changed, and an
/// image HEADed again only when its listing ETag (or, unlisted, its manifest) did.
/// Holds only what the last scan saw.
#[derive(Debug, Default)]
pub struct ScanMemory {
    /// (bucket, key) -> (the manifest's ETag, what it said).
    manifests: HashMap<(String, String), (String, Result<Rootfs, ManifestError>)>,
    /// Object URL -> (its listing ETag when HEADed, if listed; what HEAD said).
    objects: HashMap<String, (Option<String>, ObjectInfo)>,
}

/// Objects the listings of this scan saw: URL -> (size, ETag), and the (bucket,
/// prefix) ranges they cover (an object in a range but not listed does not exist).
#[derive(Debug, Default)]
struct Listings {
    objects: HashMap<String, (u64, Option<String>)>,
    ranges: Vec<(String, String)>,
}

impl Listings {
    fn add(&mut self, bucket: &str, prefix: &str, listed: &[Listed]) {
        for l in listed {
            let url = format!("s3://{bucket}/{}", l.key);
            self.objects.insert(url, (l.size, l.etag.clone()));
        }
        self.ranges.push((bucket.to_string(), prefix.to_string()));
    }

    /// What the listings say of `url`: `None` if no listing covers it, `Some(None)`
    /// if one does and it is not there.
    fn get(&self, url: &str) -> Option<Option<&(u64, Option<String>)>> {
        if let Some(o) = self.objects.get(url) {
            return Some(Some(o));
        }
        let (bucket, key) = parse_url(url)?;
        self.ranges
            .iter()
            .any(|(b, p)| *b == bucket && key.starts_with(p.as_str()))
            .then_some(None)
    }
}

/// One manifest to project, from a bucket listing or IMS.
struct ManifestJob {
    bucket: String,
    key: String,
    image_id: String,
    origin: Origin,
    /// Its ETag if known without asking (listing, IMS).
    etag: Option<String>,
    /// Its size, when a listing gave it with the ETag.
    size: Option<u64>,
}

/// One image to HEAD (or not) and project.
struct ImageJob {
    image_id: String,
    origin: Origin,
    url: String,
    identity: String,
    etag: Option<String>,
    md5: Option<String>,
    /// Its manifest was read again this scan (an unlisted image is HEADed then).
    manifest_changed: bool,
}

/// One scan in progress: the result so far and what it has already seen.
struct Walk<'a> {
    s: Scan,
    previous: &'a HashMap<String, (String, u64)>,
}

/// Read a manifest unless `memory` holds it at the ETag known for it; returns what
/// it said, the ETag it was read at, and whether it was read.
async fn read_manifest(
    client: &S3Client,
    job: &ManifestJob,
    remembered: Option<&(String, Result<Rootfs, ManifestError>)>,
) -> Result<(String, Result<Rootfs, ManifestError>, bool), StoreError> {
    if let (Some(known), Some((etag, parsed))) = (&job.etag, remembered) {
        if known == etag {
            return Ok((etag.clone(), parsed.clone(), false));
        }
    }
    let (bytes, etag) = match (&job.etag, job.size) {
        // Listed: one GET guarded by the listing's ETag.
        (Some(etag), Some(size)) => {
            let b = client
                .get_known(&job.bucket, &job.key, size, Some(etag), MAX_MANIFEST)
                .await?;
            (b, etag.clone())
        }
        _ => {
            let (b, e) = client
                .get_small_tagged(&job.bucket, &job.key, MAX_MANIFEST)
                .await?;
            (b, e.unwrap_or_default())
        }
    };
    Ok((etag, manifest::rootfs(&bytes), true))
}

/// Scan every source. `previous` maps URL to (content key, size) from the last scan,
/// to notice an object whose size changed under the same key (still being written);
/// `memory` is what the last scan learned (updated to what this one saw).
pub async fn scan(
    client: &S3Client,
    cfg: &CatalogConfig,
    previous: &HashMap<String, (String, u64)>,
    memory: &mut ScanMemory,
) -> Scan {
    let mut w = Walk {
        s: Scan::default(),
        previous,
    };
    let mut listings = Listings::default();
    let mut jobs: Vec<ManifestJob> = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for bucket in &cfg.manifest_buckets {
        let listed = match client.list(bucket, "").await {
            Ok(k) => k,
            Err(e) => {
                warn!(bucket, error = %e, "cannot list manifests");
                w.s.failed_sources.push(Source::Bucket(bucket.clone()));
                continue;
            }
        };
        listings.add(bucket, "", &listed);
        let mut manifests: Vec<&Listed> = listed
            .iter()
            .filter(|l| l.key.ends_with("/manifest.json") && l.key.matches('/').count() == 1)
            .collect();
        manifests.sort_by(|a, b| a.key.cmp(&b.key));
        for l in manifests {
            if seen.insert((bucket.clone(), l.key.clone())) {
                jobs.push(ManifestJob {
                    bucket: bucket.clone(),
                    key: l.key.clone(),
                    image_id: l.key.trim_end_matches("/manifest.json").to_string(),
                    origin: Origin::Manifest,
                    etag: l.etag.clone(),
                    size: Some(l.size),
                });
            }
        }
    }
    let mut prefix_images = Vec::new();
    for prefix_url in &cfg.prefixes {
        let Some((bucket, prefix)) = parse_prefix(prefix_url) else {
            let d = format!("{prefix_url} is not s3://bucket/prefix/");
            w.s.problem(prefix_url, "bad_prefix", d, true);
            continue;
        };
        let listed = match client.list(&bucket, &prefix).await {
            Ok(k) => k,
            Err(e) => {
                warn!(prefix = %prefix_url, error = %e, "cannot list prefix");
                w.s.failed_sources.push(Source::Prefix(prefix_url.clone()));
                continue;
            }
        };
        listings.add(&bucket, &prefix, &listed);
        // Sidecar digest indexes sit beside images; they are not images.
        let image = |k: &str| !k.ends_with('/') && !k.ends_with(crate::store::index::SUFFIX);
        for l in listed.iter().filter(|l| image(&l.key)) {
            let url = format!("s3://{bucket}/{}", l.key);
            let name = l.key.rsplit('/').next().unwrap_or(&l.key).to_string();
            prefix_images.push(ImageJob {
                image_id: name,
                origin: Origin::Prefix,
                identity: url.clone(),
                url,
                etag: None,
                md5: None,
                manifest_changed: false,
            });
        }
    }
    if let Some(url) = &cfg.ims_url {
        match super::ims::manifests(url, cfg).await {
            Err(e) => {
                // The last good catalog stays served (a failed source keeps its set).
                w.s.problem("IMS", e.kind(), e.to_string(), false);
                w.s.failed_sources.push(Source::Ims);
            }
            Ok(list) => {
                for m in list {
                    let Some((bucket, key)) = parse_url(&m.url) else {
                        let d = format!("manifest link {} is not s3://bucket/key", m.url);
                        w.s.problem(&m.id, "bad_path", d, true);
                        continue;
                    };
                    if !seen.insert((bucket.clone(), key.clone())) {
                        continue;
                    }
                    // The listing's ETag (and size), else IMS's record of it.
                    let (etag, size) = match listings.get(&m.url).flatten() {
                        Some((size, Some(e))) => (Some(e.clone()), Some(*size)),
                        _ => (m.etag.clone(), None),
                    };
                    jobs.push(ManifestJob {
                        bucket,
                        key,
                        image_id: m.id,
                        origin: Origin::Ims,
                        etag,
                        size,
                    });
                }
            }
        }
    }

    // Manifests: the changed ones read, MAX_IN_FLIGHT at a time.
    let mem = &*memory;
    // Futures collected first: a stream holding the closure would not be `Send`
    // for a spawned scan (rustc's higher-ranked closure inference).
    let reads: Vec<_> = jobs
        .iter()
        .map(|job| {
            let remembered = mem.manifests.get(&(job.bucket.clone(), job.key.clone()));
            read_manifest(client, job, remembered)
        })
        .collect();
    let read: Vec<_> = futures::stream::iter(reads)
        .buffered(MAX_IN_FLIGHT)
        .collect()
        .await;
    let mut manifests = HashMap::new();
    let mut images = Vec::new();
    for (job, result) in jobs.iter().zip(read) {
        let (etag, parsed, changed) = match result {
            Ok(r) => r,
            Err(e) => {
                let d = format!("s3://{}/{}: {e}", job.bucket, job.key);
                let kind = match e {
                    StoreError::TooLarge(_) => "manifest_too_large",
                    _ => "manifest_unreadable",
                };
                w.s.problem(&job.image_id, kind, d, true);
                continue;
            }
        };
        manifests.insert(
            (job.bucket.clone(), job.key.clone()),
            (etag, parsed.clone()),
        );
        if let Some(img) = w.rootfs(job, parsed, changed) {
            images.push(img);
        }
    }
    images.extend(prefix_images);

    // Images: HEADed where the listing (or the manifest) says they changed.
    let heads: Vec<_> = images
        .iter()
        .map(|img| {
            let listed = listings.get(&img.url);
            let remembered = mem.objects.get(&img.url);
            async move {
                let listed_etag = listed.flatten().and_then(|(_, e)| e.clone());
                match (listed, remembered) {
                    // Listed where it should be and not there: no HEAD needed.
                    (Some(None), _) => Err(StoreError::NotFound(img.url.clone())),
                    // A rootfs its manifest names by ETag: the listing's size and ETag are
                    // all the content key needs (a mismatch shows there too).
                    (Some(Some((size, Some(e)))), _) if img.etag.is_some() => Ok((
                        listed_etag.clone(),
                        ObjectInfo {
                            size: *size,
                            etag: Some(e.clone()),
                            version_id: None,
                            metadata: Default::default(),
                        },
                    )),
                    (Some(Some(_)), Some((was, info))) if *was == listed_etag && was.is_some() => {
                        Ok((listed_etag, info.clone()))
                    }
                    (None, Some((_, info))) if !img.manifest_changed => Ok((None, info.clone())),
                    _ => {
                        let (bucket, key) = parse_url(&img.url)
                            .ok_or_else(|| StoreError::NotFound(img.url.clone()))?;
                        client.head(&bucket, &key).await.map(|i| (listed_etag, i))
                    }
                }
            }
        })
        .collect();
    let heads: Vec<_> = futures::stream::iter(heads)
        .buffered(MAX_IN_FLIGHT)
        .collect()
        .await;
    let winners = winners(&images, &heads);
    let mut objects = HashMap::new();
    for (i, (img, head)) in images.into_iter().zip(heads).enumerate() {
        if let Some((_, first)) = winners.get(&img.url).filter(|(at, _)| *at != i) {
            let d = format!(
                "{} is served for image {first} (see the duplicate rule in docs/control-plane.md)",
                img.url
            );
            w.s.problem(&img.image_id, "duplicate", d, true);
            continue;
        }
        if let Ok((listed, info)) = &head {
            objects.insert(img.url.clone(), (listed.clone(), info.clone()));
        }
        w.image(img, head.map(|(_, i)| i));
    }
    *memory = ScanMemory { manifests, objects };
    w.s
}

/// How well an image's entry names its object: by the ETag S3 has (0), by an
/// md5 (1), by nothing (2). Lower wins a duplicate.
fn claim(img: &ImageJob, head: &Result<(Option<String>, ObjectInfo), StoreError>) -> u8 {
    let unquote = |e: &str| e.trim_matches('"').to_ascii_lowercase();
    let object = head
        .as_ref()
        .ok()
        .and_then(|(_, i)| i.etag.as_deref())
        .map(unquote);
    match (&img.etag, &img.md5) {
        (Some(e), _) if object.is_some() && object == Some(unquote(e)) => 0,
        (_, Some(_)) => 1,
        _ => 2,
    }
}

/// The rule for duplicates: one LUN per object. Among the entries naming the same
/// object, the one that names it best ([`claim`]) wins, then the lowest image id;
/// an entry whose path is not an s3:// URL never wins. Object URL -> (index of the
/// winner, its image id).
fn winners(
    images: &[ImageJob],
    heads: &[Result<(Option<String>, ObjectInfo), StoreError>],
) -> HashMap<String, (usize, String)> {
    let mut best: HashMap<String, (u8, String, usize)> = HashMap::new();
    for (i, (img, head)) in images.iter().zip(heads).enumerate() {
        if parse_url(&img.url).is_none() {
            continue;
        }
        let cand = (claim(img, head), img.image_id.clone(), i);
        match best.get(&img.url) {
            Some(b) if (b.0, &b.1) <= (cand.0, &cand.1) => {}
            _ => {
                best.insert(img.url.clone(), cand);
            }
        }
    }
    best.into_iter()
        .map(|(url, (_, id, i))| (url, (i, id)))
        .collect()
}

fn parse_prefix(url: &str) -> Option<(String, String)> {
    let (bucket, prefix) = url.strip_prefix("s3://")?.split_once('/')?;
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix.to_string()))
}

impl Walk<'_> {
    /// What a manifest projects: its rootfs image, or a problem saying why not.
    fn rootfs(
        &mut self,
        job: &ManifestJob,
        parsed: Result<Rootfs, ManifestError>,
        changed: bool,
    ) -> Option<ImageJob> {
        let image_id = &job.image_id;
        let rootfs = match parsed {
            Ok(r) => r,
            Err(e) => {
                let d = format!("s3://{}/{}: {e}; image skipped", job.bucket, job.key);
                self.s.problem(image_id, e.kind(), d, true);
                return None;
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
        Some(ImageJob {
            image_id: image_id.clone(),
            origin: job.origin,
            url: rootfs.path,
            identity,
            etag: rootfs.etag,
            md5: rootfs.md5,
            manifest_changed: changed,
        })
    }

    /// Decide one image's content key from what HEAD said; record it or the problem.
    fn image(&mut self, img: ImageJob, head: Result<ObjectInfo, StoreError>) {
        let ImageJob {
            image_id,
            origin,
            url,
            identity,
            etag,
            md5,
            ..
        } = img;
        let (image_id, url) = (image_id.as_str(), url.as_str());
        let (etag, md5) = (etag.as_deref(), md5.as_deref());
        let s = &mut self.s;
        if parse_url(url).is_none() {
            s.problem(
                image_id,
                "bad_path",
                format!("{url} is not an s3:// URL"),
                true,
            );
            return;
        }
        let info = match head {
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
