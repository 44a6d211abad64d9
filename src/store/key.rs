//! The content key of an S3 image, and the cache namespace its bytes live under.
//!
//! The content key is what the catalog and the operator call a version: the
//! manifest's etag when it agrees with the object, else the md5 (manifest or
//! `md5sum` metadata), else the ETag from HEAD. A manifest that disagrees with the
//! object is stale: the object's own ETag is used and the disagreement reported.
//!
//! A claim is not a key: an md5 from a manifest or from metadata is what someone says
//! the bytes are, so it never names cached bytes. The cache namespace is bound to
//! where the bytes come from and to what S3 itself says they are: the object's URL,
//! the ETag S3 gave (every GET is guarded by it), the version id where there is one,
//! and the size. Two objects that claim the same md5 get two caches, and a re-upload
//! under the same key is new content whatever its metadata claims.

use super::s3::ObjectInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    ManifestEtag,
    Md5,
    HeadEtag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentKey {
    pub key: String,
    pub source: KeySource,
    /// Set when the manifest disagrees with the object.
    pub stale_manifest: Option<String>,
}

fn norm(s: &str) -> String {
    s.trim().trim_matches('"').to_ascii_lowercase()
}

pub fn content_key(
    manifest_etag: Option<&str>,
    manifest_md5: Option<&str>,
    info: &ObjectInfo,
) -> Result<ContentKey, String> {
    let head = info.etag.as_deref().map(norm).filter(|e| !e.is_empty());
    if head.is_none() {
        // Without an ETag from S3 no GET can be guarded and no answer checked.
        return Err("S3 gave no ETag for the object: nothing can guard its reads".to_string());
    }
    let meta_md5 = info
        .metadata
        .get("md5sum")
        .map(|m| norm(m))
        .filter(|m| !m.is_empty());
    let from_head = |why: Option<String>| match &head {
        Some(h) => Ok(ContentKey {
            key: h.clone(),
            source: KeySource::HeadEtag,
            stale_manifest: why,
        }),
        None => {
            Err("the object has no ETag and no usable md5: nothing can guard its reads".to_string())
        }
    };
    if let Some(e) = manifest_etag.map(norm).filter(|e| !e.is_empty()) {
        return match &head {
            Some(h) if *h != e => from_head(Some(format!(
                "manifest etag {e} but the object's ETag is {h}"
            ))),
            _ => Ok(ContentKey {
                key: e,
                source: KeySource::ManifestEtag,
                stale_manifest: None,
            }),
        };
    }
    let md5 = manifest_md5.map(norm).filter(|m| !m.is_empty());
    match (md5, meta_md5) {
        (Some(m), Some(meta)) if m != meta => from_head(Some(format!(
            "manifest md5 {m} but the object's md5sum is {meta}"
        ))),
        (Some(m), _) | (None, Some(m)) => Ok(ContentKey {
            key: m,
            source: KeySource::Md5,
            stale_manifest: None,
        }),
        (None, None) => from_head(None),
    }
}

/// The cache namespace of the object at `url` as S3 described it (HEAD): `None` when
/// S3 gave no ETag (such an object is not served).
pub fn cache_namespace(url: &str, info: &ObjectInfo) -> Option<String> {
    let etag = info.etag.as_deref().map(norm).filter(|e| !e.is_empty())?;
    let version = info
        .version_id
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "null")
        .map_or(String::new(), |v| format!("|version={v}"));
    Some(format!("{url}|etag={etag}|size={}{version}", info.size))
}

/// Whether `want` (a whole namespace, an object URL or an ETag, as an operator types
/// them to `s3lun cache purge`) names the cache namespace `ns`.
pub fn namespace_matches(ns: &str, want: &str) -> bool {
    let want = want.trim();
    !want.is_empty()
        && (ns == want
            || ns.starts_with(&format!("{want}|"))
            || ns.contains(&format!("|etag={}|", norm(want))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn info(etag: Option<&str>, md5sum: Option<&str>) -> ObjectInfo {
        let mut metadata = HashMap::new();
        if let Some(m) = md5sum {
            metadata.insert("md5sum".to_string(), m.to_string());
        }
        ObjectInfo {
            size: 10,
            etag: etag.map(str::to_string),
            version_id: None,
            metadata,
        }
    }

    #[test]
    fn precedence_and_staleness() {
        let i = info(Some("f4153fe0a18cfb2205fb002d81a23ab2-2634"), Some("fa69"));
        let k = content_key(
            Some("f4153fe0a18cfb2205fb002d81a23ab2-2634"),
            Some("fa69"),
            &i,
        )
        .unwrap();
        assert_eq!(
            (k.key.as_str(), k.source),
            (
                "f4153fe0a18cfb2205fb002d81a23ab2-2634",
                KeySource::ManifestEtag
            )
        );
        // Missing or null etag (the seed incident): md5 from the manifest.
        let k = content_key(None, Some("FA69"), &i).unwrap();
        assert_eq!((k.key.as_str(), k.source), ("fa69", KeySource::Md5));
        // No md5 in the manifest: the object's md5sum metadata.
        let k = content_key(None, None, &i).unwrap();
        assert_eq!(k.source, KeySource::Md5);
        // Nothing at all: HEAD's ETag.
        let k = content_key(None, None, &info(Some("\"abc\""), None)).unwrap();
        assert_eq!((k.key.as_str(), k.source), ("abc", KeySource::HeadEtag));
        // Stale manifest etag: the object's ETag wins, and we say so.
        let k = content_key(Some("old"), None, &info(Some("new"), None)).unwrap();
        assert_eq!(k.key, "new");
        assert!(k.stale_manifest.unwrap().contains("old"));
        let k = content_key(None, Some("aaaa"), &info(Some("new"), Some("bbbb"))).unwrap();
        assert_eq!(k.key, "new");
        assert!(content_key(None, None, &info(None, None)).is_err());
        // An md5 claim without an ETag from S3: nothing would guard the reads.
        assert!(content_key(None, Some("fa69"), &info(None, None)).is_err());
    }

    #[test]
    fn a_claim_never_names_the_cache() {
        // Same claimed md5, two objects: two namespaces.
        let a = info(Some("aaaa"), Some("fa69"));
        let b = info(Some("bbbb"), Some("fa69"));
        let na = cache_namespace("s3://x/a", &a).unwrap();
        let nb = cache_namespace("s3://x/b", &b).unwrap();
        assert_ne!(na, nb);
        // Re-uploaded under the same key with the same claim: a new namespace.
        let again = info(Some("cccc"), Some("fa69"));
        assert_ne!(na, cache_namespace("s3://x/a", &again).unwrap());
        // Same bytes, another size claim is impossible; another version id is not.
        let mut v = a.clone();
        v.version_id = Some("v2".into());
        assert_ne!(na, cache_namespace("s3://x/a", &v).unwrap());
        assert_eq!(cache_namespace("s3://x/a", &info(None, Some("fa69"))), None);
        assert!(namespace_matches(&na, "s3://x/a"));
        assert!(namespace_matches(&na, "\"AAAA\""));
        assert!(namespace_matches(&na, &na));
        assert!(!namespace_matches(&na, "s3://x"));
        assert!(!namespace_matches(&na, "fa69"));
        assert!(!namespace_matches(&na, ""));
    }
}
