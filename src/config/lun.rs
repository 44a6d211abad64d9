//! The `[[lun]]` sections: images served whatever the catalog holds.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    /// Local image file to serve (or `s3`).
    pub path: Option<PathBuf>,
    /// Object to serve, `s3://bucket/key` (or `path`).
    pub s3: Option<String>,
    /// The etag a manifest gave for the object (content key when it agrees).
    pub etag: Option<String>,
    /// The md5 a manifest gave for the object (content key when no etag).
    pub md5: Option<String>,
    /// LUN number; default: the lowest free one.
    pub lun: Option<u64>,
    /// String the LIO-compatible identity (serial, WWID) is computed from;
    /// default `file://<absolute path>`, or the `s3://` URL.
    pub identity: Option<String>,
    /// Honour RESERVE(6)/RELEASE(6) on this LUN (default: no, they are answered as
    /// unsupported, so no initiator can lock others out of a shared image).
    pub reservations: Option<bool>,
}
