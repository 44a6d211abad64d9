//! Turning configuration plus catalog scans into LUN tables: static LUNs from the
//! config, catalog images on top, stable numbers from the state file, and the last
//! known catalog served at start-up while the first scan runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::bail;
use tracing::{error, info, warn};

use super::scan::{Entry, Scan};
use super::shared_map::{MapError, MapStats, Numbers, SharedMap, Synced};
use crate::assemble::{open_lun, open_s3, Backends};
use crate::catalog::lun_numbers::{KnownImage, LunMap, Retiring, MAX_LUN};
use crate::config::Config;
use crate::lun_table::Lun;
use crate::scsi::{Identity, LunInfo};
use crate::store::key::{ContentKey, KeySource};
use crate::store::s3::ObjectInfo;
use crate::store::served::{unix_now, Backing};
use crate::store::BlockStore;
use crate::store::ServedLuns;

/// Builds LUN tables; keeps what must persist between builds.
pub struct Builder {
    pub map: LunMap,
    pub backends: Backends,
    /// The last scan's images (or the state file's, before the first scan).
    pub catalog: Vec<Entry>,
    /// The fleet's map in S3, when configured: numbers come only from it.
    pub shared: Option<Shared>,
    /// Catalog images the last build could not number (all numbers used, or none
    /// in the shared map yet): not served.
    pub unnumbered: usize,
}

/// The shared map and what this instance knows of the server behind it.
pub struct Shared {
    pub map: SharedMap,
    /// The conditional-write probe passed (it runs at the first contact).
    pub probed: bool,
    /// The probe showed the server ignores conditional writes, or refuses those that
    /// must succeed: the map is refused.
    pub refused: Option<MapError>,
    pub stats: Arc<MapStats>,
}

impl Shared {
    /// Probe once, then make sure every identity in `wanted` has a number and every
    /// binding in `held` stands.
    async fn sync(
        &mut self,
        wanted: &[(String, Option<u64>)],
        held: &Numbers,
        served: &HashSet<String>,
    ) -> Result<Synced, MapError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        if !self.probed {
            match self.map.probe().await {
                Err(e @ (MapError::Ignored(_) | MapError::Refused(_))) => {
                    self.refused = Some(e.clone());
                    return Err(e);
                }
                r => r?,
            }
            info!(map = %self.map.url(), "shared LUN map: the server honours conditional writes");
            self.probed = true;
        }
        self.map.sync(wanted, held, served).await
    }
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
            version_id: k.version_id.clone(),
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
    pub fn new(map: LunMap, backends: Backends, shared: Option<Shared>) -> Builder {
        let catalog = map.known.iter().map(entry_of).collect();
        Builder {
            map,
            backends,
            catalog,
            shared,
            unnumbered: 0,
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
                // A bucket or prefix source is named by its URL; IMS, whose
                // images live anywhere, by their origin.
                let from_failed = scan.failed_sources.iter().any(|src| match src.as_str() {
                    "ims" => old.origin == "ims",
                    url => old.url.starts_with(url),
                });
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
                version_id: e.info.version_id.clone(),
                content_key: e.key.key.clone(),
            })
            .collect();
    }

    /// The table for `cfg` plus the catalog. LUNs whose image and version did not
    /// change are carried over from `current` (reservations, read clock and all);
    /// catalog images that left it stay while read within `retire_after_secs`.
    /// `sync`: read (and extend) the shared map first, else use the last known copy.
    pub async fn build(
        &mut self,
        cfg: &Config,
        current: Option<&ServedLuns>,
        sync: bool,
    ) -> anyhow::Result<ServedLuns> {
        let items = self.items(cfg).await?;
        if let Some(shared) = self.shared.as_mut().filter(|_| sync) {
            let wanted: Vec<_> = items
                .iter()
                .map(|i| (i.identity.clone(), i.pinned))
                .collect();
            // What this instance serves or is about to serve (after a restart the
            // table is empty, but its sessions come back for the same numbers).
            let served: HashSet<String> = current
                .into_iter()
                .flat_map(|t| t.table.iter().map(|l| l.info.identity.source.clone()))
                .chain(wanted.iter().map(|(id, _)| id.clone()))
                .collect();
            match shared.sync(&wanted, &self.map.held(), &served).await {
                Ok(synced) => {
                    shared.stats.synced();
                    if let Some(e) = &synced.damaged {
                        shared.stats.error(e.kind());
                        warn!(map = %shared.map.url(), error = %e, "shared LUN map was damaged: rewritten from the numbers this instance holds");
                    }
                    for c in &synced.refused {
                        shared.stats.error(c.kind());
                        warn!(map = %shared.map.url(), "shared LUN map refused where it contradicts a number in use here: {c}; the binding is kept and restored in the map");
                    }
                    for (identity, lun) in &synced.retired {
                        info!(map = %shared.map.url(), %identity, lun, "shared LUN map retired a number this instance does not serve: accepted");
                    }
                    self.map.adopt(&synced.numbers);
                }
                Err(e) => {
                    shared.stats.error(e.kind());
                    error!(map = %shared.map.url(), error = %e, "shared LUN map: serving the last known numbers, assigning none");
                }
            }
        }
        let shared = self.shared.is_some();
        let mut unnumbered = 0;
        if !shared {
            let wanted: Vec<_> = items
                .iter()
                .map(|i| (i.identity.clone(), i.pinned))
                .collect();
            let left = self.map.assign_all(&wanted);
            if !left.is_empty() {
                error!(
                    images = left.len(),
                    first = %left[0],
                    "no LUN number left: all {} (0..={MAX_LUN}) are in use or kept retired; these images are not served",
                    MAX_LUN + 1
                );
            }
        }
        let mut luns: Vec<(Arc<Lun>, Backing)> = Vec::new();
        let mut identities = Vec::new();
        for it in items {
            let number = if shared {
                match self.map.lookup(&it.identity, it.pinned) {
                    Ok(Some(n)) => Ok(n),
                    Ok(None) => {
                        warn!(image = %it.identity, "no number in the shared LUN map yet: not served until one can be written");
                        unnumbered += 1;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.map.assign(&it.identity, it.pinned)
            };
            let number = match number {
                Ok(n) if n <= MAX_LUN => n,
                Ok(n) => bail!("LUN {n} is above {MAX_LUN}"),
                Err(e) if it.from_catalog => {
                    warn!(image = %it.identity, error = format!("{e:#}"), "catalog image skipped");
                    unnumbered += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let before = current.and_then(|t| Some((t.table.get(number)?, t.backing(number)?)));
            let lun = match before {
                // The same LUN object (reservations and all) and the same store.
                Some((l, b))
                    if l.info.identity.source == it.identity
                        && l.version == it.version
                        && l.info.reservations == it.reservations =>
                {
                    (Arc::clone(l), b.clone())
                }
                _ => {
                    if let Some((l, _)) = before.filter(|(l, _)| {
                        l.info.identity.source == it.identity && l.version != it.version
                    }) {
                        warn!(lun = number, image = %it.identity, old = %l.version, new = %it.version, "content changed under the same identity: sessions are told the medium may have changed");
                    }
                    let mut info =
                        LunInfo::new(number, it.store.size(), Identity::lio(&it.identity));
                    info.reservations = it.reservations;
                    (
                        Arc::new(Lun::new(info, it.version)),
                        Backing::new(it.store, it.from_catalog),
                    )
                }
            };
            luns.push(lun);
            identities.push(it.identity);
        }
        let mut retiring = Vec::new();
        if let Some(cur) = current {
            let now = unix_now();
            let window = cfg.catalog.retire_after_secs;
            // Sets, not scans of the lists: a catalog can hold thousands of images.
            let numbers: HashSet<u64> = luns.iter().map(|(l, _)| l.info.lun).collect();
            let served: HashSet<String> = identities.iter().cloned().collect();
            for l in cur.table.iter() {
                let n = l.info.lun;
                let Some(b) = cur.backing(n) else { continue };
                if !b.from_catalog
                    || numbers.contains(&n)
                    || served.contains(&l.info.identity.source)
                {
                    continue;
                }
                let idle = now.saturating_sub(b.last_read());
                if b.last_read() > 0 && idle < window {
                    if !cur.retiring.contains(&n) {
                        info!(lun = n, image = %l.info.identity.source, idle_secs = idle, retire_after_secs = window, "image left the catalog: kept while sessions read it");
                    }
                    retiring.push(Retiring {
                        lun: n,
                        identity: l.info.identity.source.clone(),
                        last_read: b.last_read(),
                    });
                    identities.push(l.info.identity.source.clone());
                    luns.push((Arc::clone(l), b.clone()));
                } else {
                    info!(lun = n, image = %l.info.identity.source, idle_secs = idle, "image left the catalog and is not being read: retired");
                }
            }
        }
        if !shared {
            self.map.retire_others(&identities);
        }
        self.map.retiring = retiring;
        self.map.save()?;
        info!(luns = luns.len(), "LUN table built");
        self.unnumbered = unnumbered;
        let mut served = ServedLuns::new(luns);
        served.retiring = self.map.retiring.iter().map(|r| r.lun).collect();
        Ok(served)
    }

    /// What the configuration and the catalog ask to serve, opened.
    async fn items(&self, cfg: &Config) -> anyhow::Result<Vec<Item>> {
        let mut items: Vec<Item> = Vec::new();
        for l in &cfg.luns {
            let o = open_lun(l, &self.backends).await?;
            if items.iter().any(|i| i.identity == o.identity) {
                bail!("image {} is configured twice", o.identity);
            }
            items.push(Item {
                identity: o.identity,
                version: o.version,
                pinned: l.lun,
                store: o.store,
                from_catalog: false,
                reservations: l.reservations.unwrap_or(false),
            });
        }
        for e in &self.catalog {
            if items.iter().any(|i| i.identity == e.identity) {
                warn!(image = %e.image_id, "also configured statically: the [[lun]] entry wins");
                continue;
            }
            match open_s3(&e.url, &e.info, &e.key, e.identity.clone(), &self.backends) {
                // Catalog images are the shared boot images: never reservable.
                Ok(o) => items.push(Item {
                    identity: o.identity,
                    version: o.version,
                    pinned: None,
                    store: o.store,
                    from_catalog: true,
                    reservations: false,
                }),
                Err(err) => {
                    warn!(image = %e.image_id, error = format!("{err:#}"), "catalog image skipped")
                }
            }
        }
        Ok(items)
    }
}

/// One image to serve, opened, before it has a number.
struct Item {
    identity: String,
    version: String,
    pinned: Option<u64>,
    store: Arc<dyn BlockStore>,
    from_catalog: bool,
    reservations: bool,
}
