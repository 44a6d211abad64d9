//! Assembly: what a configuration becomes at run time. The S3 client and block cache
//! shared by the whole target, and each configured image opened as a store (an S3
//! object through the cache, or a local file). Configuration itself (parsing,
//! validation, defaults) stays in [`crate::config`].

use std::sync::Arc;

use anyhow::{bail, Context};

use crate::config::{Config, LunConfig, S3Config};
use crate::store::cache::profile::ProfileStore;
use crate::store::cache::{CachedStore, ChunkCache};
use crate::store::key::{cache_namespace, content_key, ContentKey};
use crate::store::s3::profiles::S3Profiles;
use crate::store::s3::{parse_url, ObjectInfo, S3Client, S3Object, S3Store};
use crate::store::{BlockStore, LocalFile};

/// What LUNs are opened with: one S3 client and one cache for the whole target.
#[derive(Debug, Clone)]
pub struct Backends {
    pub s3: Option<S3Client>,
    pub cache: Arc<ChunkCache>,
}

impl Backends {
    /// The S3 client and cache of `cfg`, built once per process; the cache runs its
    /// fetches and disk work on `runtime`.
    pub fn build(cfg: &Config, runtime: tokio::runtime::Handle) -> anyhow::Result<Backends> {
        let needs_s3 = cfg.luns.iter().any(|l| l.s3.is_some()) || !cfg.catalog.is_empty();
        let s3 = match (&cfg.s3, needs_s3) {
            (Some(c), _) => Some(S3Client::new(&c.settings()?)),
            (None, true) => Some(S3Client::new(&S3Config::default().settings()?)),
            (None, false) => None,
        };
        let mut cache = cfg.cache.settings();
        if s3.is_none() {
            // Local files need no cache: do not create a directory for nothing.
            cache.dir = None;
        }
        Ok(Backends {
            s3,
            cache: ChunkCache::new(cache, runtime),
        })
    }
}

/// Open an S3 image already HEADed: guarded by the ETag seen then, read through the
/// cache under the namespace of that object at that ETag (never under a claimed md5:
/// see [`crate::store::key`]).
pub fn open_s3(
    url: &str,
    info: &ObjectInfo,
    ck: &ContentKey,
    identity: String,
    b: &Backends,
) -> anyhow::Result<Opened> {
    let (bucket, key) = parse_url(url).with_context(|| format!("bad S3 URL {url:?}"))?;
    let client = b.s3.clone().context("an s3 LUN needs an [s3] section")?;
    if info.size == 0 {
        bail!("{url} is empty");
    }
    let namespace = cache_namespace(url, info)
        .with_context(|| format!("{url}: S3 gave no ETag: nothing can guard its reads"))?;
    tracing::info!(object = %url, content_key = %ck.key, source = ?ck.source, size = info.size, cache = %namespace, "S3 image");
    let profiles: Arc<dyn ProfileStore> =
        Arc::new(S3Profiles::new(client.clone(), &bucket, &namespace));
    let object: Arc<dyn BlockStore> = Arc::new(S3Store(S3Object::new(client, &bucket, &key, info)));
    let store = CachedStore::open(object, &namespace, Arc::clone(&b.cache), Some(profiles));
    Ok(Opened {
        identity,
        // What S3 says the bytes are: a re-upload is a content change whatever its
        // metadata claims.
        version: namespace,
        store: store.clone(),
        cached: Some(store),
        object: Some((info.clone(), ck.clone())),
    })
}

/// An opened image.
pub struct Opened {
    pub identity: String,
    /// Cache namespace (S3: URL, S3's ETag, size) or path (file): see
    /// [`crate::lun_table::Lun::version`].
    pub version: String,
    pub store: Arc<dyn BlockStore>,
    /// The cache view of an S3 image.
    pub cached: Option<Arc<CachedStore>>,
    /// An S3 image's object as HEADed and its content key (what a restart needs to
    /// serve it again before S3 answers).
    pub object: Option<(ObjectInfo, ContentKey)>,
}

/// The identity a `[[lun]]` is numbered by, known without opening it.
pub fn static_identity(l: &LunConfig) -> String {
    if let Some(id) = &l.identity {
        return id.clone();
    }
    match (&l.path, &l.s3) {
        (_, Some(url)) => url.clone(),
        (Some(path), None) => {
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            format!("file://{}", abs.display())
        }
        (None, None) => String::new(),
    }
}

/// Open one image.
pub async fn open_lun(l: &LunConfig, b: &Backends) -> anyhow::Result<Opened> {
    match (&l.path, &l.s3) {
        (Some(path), None) => {
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            let identity = static_identity(l);
            let store = LocalFile::open(path)
                .with_context(|| format!("opening image {}", path.display()))?;
            Ok(Opened {
                identity,
                version: abs.display().to_string(),
                store: Arc::new(store),
                cached: None,
                object: None,
            })
        }
        (None, Some(url)) => {
            let (bucket, key) = parse_url(url).with_context(|| format!("bad S3 URL {url:?}"))?;
            let client = b.s3.clone().context("an s3 LUN needs an [s3] section")?;
            let info = client
                .head(&bucket, &key)
                .await
                .with_context(|| format!("opening {url}"))?;
            let ck = content_key(l.etag.as_deref(), l.md5.as_deref(), &info)
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            if let Some(why) = &ck.stale_manifest {
                tracing::warn!(object = %url, "stale manifest: {why}; using the object's ETag");
            }
            let identity = l.identity.clone().unwrap_or_else(|| url.clone());
            open_s3(url, &info, &ck, identity, b)
        }
        _ => bail!("a [[lun]] needs exactly one of path or s3"),
    }
}
