//! Turning configuration plus catalog scans into LUN tables: static LUNs from the
//! config, catalog images on top, stable numbers from the state file, and the last
//! known catalog served at start-up while the first scan runs.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;
use tracing::{info, warn};

use super::scan::{Entry, Scan};
use crate::assemble::{open_lun, open_s3, Backends};
use crate::catalog::lun_numbers::{KnownImage, LunMap, MAX_LUN};
use crate::config::Config;
use crate::lun_table::Lun;
use crate::scsi::{Identity, LunInfo};
use crate::store::key::{ContentKey, KeySource};
use crate::store::s3::ObjectInfo;
use crate::store::BlockStore;
use crate::store::ServedLuns;

/// Builds LUN tables; keeps what must persist between builds.
pub struct Builder {
    pub map: LunMap,
    pub backends: Backends,
    /// The last scan's images (or the state file's, before the first scan).
    pub catalog: Vec<Entry>,
}

fn entry_of(k: &KnownImage) -> Entry {
    Entry {
        image_id: k.image_id.clone(),
        origin: if k.origin == "prefix" {
            "prefix"
        } else {
            "manifest"
        },
        url: k.url.clone(),
        identity: k.identity.clone(),
        info: ObjectInfo {
            size: k.size,
            etag: k.etag.clone(),
            metadata: HashMap::new(),
        },
        key: ContentKey {
            key: k.content_key.clone(),
            source: KeySource::HeadEtag,
            stale_manifest: None,
        },
        notes: vec!["from the state file, not yet rescanned".into()],
    }
}

impl Builder {
    pub fn new(map: LunMap, backends: Backends) -> Builder {
        let catalog = map.known.iter().map(entry_of).collect();
        Builder {
            map,
            backends,
            catalog,
        }
    }

    /// URL -> (content key, size) of the current catalog, for the next scan.
    pub fn previous(&self) -> HashMap<String, (String, u64)> {
        self.catalog
            .iter()
            .map(|e| (e.url.clone(), (e.key.key.clone(), e.info.size)))
            .collect()
    }

    /// Take a scan's result. Sources that could not be read keep their images.
    pub fn apply_scan(&mut self, scan: Scan) {
        let mut entries = scan.entries;
        if !scan.failed_sources.is_empty() {
            for old in &self.catalog {
                let from_failed = scan
                    .failed_sources
                    .iter()
                    .any(|src| old.url.starts_with(src.as_str()));
                if from_failed && !entries.iter().any(|e| e.url == old.url) {
                    entries.push(old.clone());
                }
            }
        }
        self.catalog = entries;
        self.map.known = self
            .catalog
            .iter()
            .map(|e| KnownImage {
                image_id: e.image_id.clone(),
                origin: e.origin.to_string(),
                url: e.url.clone(),
                identity: e.identity.clone(),
                size: e.info.size,
                etag: e.info.etag.clone(),
                content_key: e.key.key.clone(),
            })
            .collect();
    }

    /// The table for `cfg` plus the catalog. LUNs whose image and version did not
    /// change are carried over from `current` (reservations and all).
    pub async fn build(
        &mut self,
        cfg: &Config,
        current: Option<&ServedLuns>,
    ) -> anyhow::Result<ServedLuns> {
        // (identity, version, pinned number, store, from the catalog, reservations)
        type Item = (String, String, Option<u64>, Arc<dyn BlockStore>, bool, bool);
        let mut items: Vec<Item> = Vec::new();
        for l in &cfg.luns {
            let o = open_lun(l, &self.backends).await?;
            if items.iter().any(|i| i.0 == o.identity) {
                bail!("image {} is configured twice", o.identity);
            }
            let reservations = l.reservations.unwrap_or(false);
            items.push((o.identity, o.version, l.lun, o.store, false, reservations));
        }
        for e in &self.catalog {
            if items.iter().any(|i| i.0 == e.identity) {
                warn!(image = %e.image_id, "also configured statically: the [[lun]] entry wins");
                continue;
            }
            match open_s3(&e.url, &e.info, &e.key, e.identity.clone(), &self.backends) {
                // Catalog images are the shared boot images: never reservable.
                Ok(o) => items.push((o.identity, o.version, None, o.store, true, false)),
                Err(err) => {
                    warn!(image = %e.image_id, error = format!("{err:#}"), "catalog image skipped")
                }
            }
        }
        let mut luns: Vec<(Arc<Lun>, Arc<dyn BlockStore>)> = Vec::new();
        let mut identities = Vec::new();
        for (identity, version, pinned, store, from_catalog, reservations) in items {
            let number = match self.map.assign(&identity, pinned) {
                Ok(n) if n <= MAX_LUN => n,
                Ok(n) => bail!("LUN {n} is above {MAX_LUN}"),
                Err(e) if from_catalog => {
                    warn!(image = %identity, error = format!("{e:#}"), "catalog image skipped");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reuse = current
                .and_then(|t| Some((t.table.get(number)?, t.store(number)?)))
                .filter(|(l, _)| {
                    l.info.identity.source == identity
                        && l.version == version
                        && l.info.reservations == reservations
                });
            let lun = match reuse {
                // The same LUN object (reservations and all) and the same store.
                Some((l, s)) => (Arc::clone(l), Arc::clone(s)),
                None => {
                    let mut info = LunInfo::new(number, store.size(), Identity::lio(&identity));
                    info.reservations = reservations;
                    (Arc::new(Lun::new(info, version)), store)
                }
            };
            luns.push(lun);
            identities.push(identity);
        }
        self.map.retire_others(&identities);
        self.map.save()?;
        info!(luns = luns.len(), "LUN table built");
        Ok(ServedLuns::new(luns))
    }
}
