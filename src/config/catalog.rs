//! The `[catalog]` and `[lunmap]` sections: where images are found besides the
//! `[[lun]]` entries, and where the fleet keeps its LUN numbers.

use serde::Deserialize;

/// The `[lunmap]` section: where the fleet keeps its LUN numbers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LunMapConfig {
    /// `s3://bucket/key` of the shared map object (needs `[s3]` and a server that
    /// honours conditional writes). Unset: numbers are this instance's own.
    pub s3: Option<String>,
}

/// A day: boot nodes keep their root mounted for weeks and read it rarely once
/// their page cache is warm; a day of silence is a node that has moved on.
pub const DEFAULT_RETIRE_AFTER_SECS: u64 = 24 * 3600;

/// The `[catalog]` section: where images are found besides the `[[lun]]` entries.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Buckets whose `<image-id>/manifest.json` objects are projected.
    pub manifest_buckets: Vec<String>,
    /// Prefixes (`s3://bucket/PE/`) whose every object is projected.
    pub prefixes: Vec<String>,
    /// Seconds between scans (SIGHUP scans at once); 0: only at start and on SIGHUP.
    pub refresh_secs: u64,
    /// An IMS-style endpoint listing images with their manifest links (which are
    /// projected: see `ims_require_tag`).
    pub ims_url: Option<String>,
    /// File holding the bearer token for `ims_url`, read again each scan.
    pub ims_token_file: Option<std::path::PathBuf>,
    /// A command (program and arguments, no shell) printing the bearer token on
    /// stdout, e.g. the SPIRE agent's JWT fetch; run when the last token's JWT `exp`
    /// is a minute away (each scan for a token without `exp`). Wins over the file.
    pub ims_token_command: Option<Vec<String>>,
    /// The token command is killed after this many seconds.
    pub ims_token_timeout_secs: u64,
    /// PEM bundle of the site's CA, trusted for `ims_url` besides the public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The old agent's IMS_TAGGING: an IMS image with `metadata` is projected only
    /// with `"sbps-project": "true"` in it (one without `metadata` always is).
    pub ims_require_tag: bool,
    /// An image that leaves the catalog keeps its LUN while any session has read it
    /// within this many seconds; then it goes (REPORTED LUNS DATA HAS CHANGED).
    pub retire_after_secs: u64,
}

impl Default for CatalogConfig {
    fn default() -> CatalogConfig {
        CatalogConfig {
            manifest_buckets: Vec::new(),
            prefixes: Vec::new(),
            refresh_secs: 0,
            ims_url: None,
            ims_token_file: None,
            ims_token_command: None,
            ims_token_timeout_secs: 10,
            ca_file: None,
            ims_require_tag: true,
            retire_after_secs: DEFAULT_RETIRE_AFTER_SECS,
        }
    }
}

impl CatalogConfig {
    pub fn is_empty(&self) -> bool {
        self.manifest_buckets.is_empty() && self.prefixes.is_empty() && self.ims_url.is_none()
    }
}
