//! Boot image manifests (`s3://<bucket>/<image-id>/manifest.json`), parsed with serde
//! into types that accept every shape seen in the field: a link without an etag, an
//! etag that is null, a missing md5, artifacts of other types.

use serde::Deserialize;

pub const ROOTFS_TYPE: &str = "application/vnd.cray.image.rootfs.squashfs";

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Manifest {
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    pub created: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Artifact {
    pub link: Option<Link>,
    pub md5: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Link {
    pub path: Option<String>,
    /// Absent, null, or possibly stale.
    pub etag: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// What a manifest says about its rootfs, plus what was odd about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub path: String,
    pub etag: Option<String>,
    pub md5: Option<String>,
    /// Problem kinds worth a log line and a counter (the image is still served).
    pub warnings: Vec<&'static str>,
}

/// Why a manifest yields no LUN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("no artifact of type {ROOTFS_TYPE}")]
    NoRootfs,
    #[error("the rootfs artifact has no link path")]
    NoPath,
}

impl ManifestError {
    /// Label for the errors-by-kind counter.
    pub fn kind(&self) -> &'static str {
        match self {
            ManifestError::InvalidJson(_) => "invalid_json",
            ManifestError::NoRootfs => "no_rootfs",
            ManifestError::NoPath => "no_path",
        }
    }
}

pub fn rootfs(bytes: &[u8]) -> Result<Rootfs, ManifestError> {
    // Editors on some systems save JSON with a UTF-8 byte-order mark; the old agent
    // (Python's json) read those, so they are accepted here too.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::InvalidJson(e.to_string()))?;
    let rootfs: Vec<Artifact> = m
        .artifacts
        .into_iter()
        .filter(|a| a.kind.as_deref() == Some(ROOTFS_TYPE))
        .collect();
    if rootfs.is_empty() {
        return Err(ManifestError::NoRootfs);
    }
    let path_of = |a: &Artifact| {
        a.link
            .as_ref()
            .and_then(|l| l.path.clone())
            .filter(|p| !p.is_empty())
    };
    let etag_of = |a: &Artifact| {
        a.link
            .as_ref()
            .and_then(|l| l.etag.clone())
            .filter(|e| !e.is_empty())
    };
    // As the old agent: of several rootfs artifacts, the last with a path and an
    // etag; without any etag (which the agent skipped), the last with a path.
    let a = rootfs
        .iter()
        .rev()
        .find(|a| path_of(a).is_some() && etag_of(a).is_some())
        .or_else(|| rootfs.iter().rev().find(|a| path_of(a).is_some()))
        .ok_or(ManifestError::NoPath)?;
    let path = path_of(a).ok_or(ManifestError::NoPath)?;
    let etag = etag_of(a);
    let md5 = a.md5.clone().filter(|m| !m.is_empty());
    let mut warnings = Vec::new();
    if etag.is_none() {
        warnings.push("missing_etag");
    }
    if md5.is_none() {
        warnings.push("missing_md5");
    }
    Ok(Rootfs {
        path,
        etag,
        md5,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("protocol-tests/fixtures/manifests")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn every_fixture_shape() {
        let r = rootfs(&fixture("with-etag.json")).unwrap();
        assert_eq!(
            r.etag.as_deref(),
            Some("f4153fe0a18cfb2205fb002d81a23ab2-2634")
        );
        assert!(r.warnings.is_empty());
        for f in ["missing-etag.json", "null-etag.json"] {
            let r = rootfs(&fixture(f)).unwrap();
            assert_eq!(r.etag, None, "{f}");
            assert_eq!(r.md5.as_deref(), Some("fa69a6665124629bfb1d74bfa3e4b7de"));
            assert_eq!(r.warnings, vec!["missing_etag"]);
            assert_eq!(
                r.path,
                "s3://boot-images/3f89b76d-7578-4ac3-8891-0f8b4335b06d/compute.squashfs"
            );
        }
        let r = rootfs(&fixture("no-etag-no-md5.json")).unwrap();
        assert_eq!(r.warnings, vec!["missing_etag", "missing_md5"]);
        assert!(r.path.ends_with("/rootfs"));
        assert_eq!(
            rootfs(&fixture("no-rootfs.json")),
            Err(ManifestError::NoRootfs)
        );
        assert!(matches!(
            rootfs(&fixture("truncated.json")),
            Err(ManifestError::InvalidJson(_))
        ));
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let plain = fixture("missing-etag.json");
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(&plain);
        assert_eq!(rootfs(&bom), rootfs(&plain));
        assert!(rootfs(&bom).is_ok());
    }

    #[test]
    fn odd_shapes_never_panic() {
        for t in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"artifacts": null}"#,
            r#"{"artifacts": [{"type": "application/vnd.cray.image.rootfs.squashfs"}]}"#,
            r#"{"artifacts": [{"type": "application/vnd.cray.image.rootfs.squashfs", "link": {"path": ""}}]}"#,
            r#"{"artifacts": [{"type": 5}]}"#,
        ] {
            assert!(rootfs(t.as_bytes()).is_err(), "{t}");
        }
    }
}
