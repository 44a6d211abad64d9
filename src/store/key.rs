//! The content key of an S3 image: what names its cache entries. It follows the
//! bytes: the manifest's etag when it agrees with the object, else the md5 (manifest
//! or `md5sum` metadata), else the ETag from HEAD. A manifest that disagrees with the
//! object is stale: the object's own ETag is used and the disagreement reported.

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
    }
}
