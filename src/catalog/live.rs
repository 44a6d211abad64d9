//! Turning configuration plus catalog scans into LUN tables: static LUNs from the
//! config, catalog images on top, stable numbers from the state file, and the last
//! known catalog served at start-up while the first scan runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::bail;
use tracing::{error, info, warn};

use super::scan::{Entry, Scan};
use super::shared_map::{MapError, MapStats, Numbers, SharedMap, Synced};
use crate::assemble::{open_lun, open_s3, static_identity, Backends, Opened};
use crate::catalog::lun_numbers::{KnownImage, LunMap, Retiring, MAX_LUN};
use crate::config::Config;
use crate::lun_table::Lun;
use crate::scsi::{Identity, LunInfo};
use crate::store::key::{ContentKey, KeySource};
use crate::store::s3::ObjectInfo;
use crate::store::served::{unix_now, Backing, Origin};
use crate::store::BlockStore;
use crate::store::ServedLuns;

/// How long start-up waits for S3 to open static LUNs it has never seen: the
/// listeners come up after this at the latest, whatever S3 does.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

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
    /// Static S3 LUNs as last HEADed (kept in the state file).
    pub statics: Vec<KnownImage>,
    /// Static LUNs the last build could not open: served from their last known
    /// version where there is one, else left out (their numbers kept).
    pub static_unavailable: usize,
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
        origin: k.origin,
        url: k.url.clone(),
        identity: k.identity.clone(),
        info: info_of(k),
        key: key_of(k),
        notes: vec!["from the state file, not yet rescanned".into()],
    }
}

fn info_of(k: &KnownImage) -> ObjectInfo {
    ObjectInfo {
        size: k.size,
        etag: k.etag.clone(),
        version_id: k.version_id.clone(),
        metadata: HashMap::new(),
    }
}

fn key_of(k: &KnownImage) -> ContentKey {
    ContentKey {
        key: k.content_key.clone(),
        source: KeySource::HeadEtag,
        stale_manifest: None,
    }
}

/// What the state file keeps of an S3 image, to serve it before S3 answers.
fn known_of(
    image_id: &str,
    origin: Origin,
    url: &str,
    identity: &str,
    info: &ObjectInfo,
    key: &ContentKey,
) -> KnownImage {
    KnownImage {
        image_id: image_id.to_string(),
        origin,
        url: url.to_string(),
        identity: identity.to_string(),
        size: info.size,
        etag: info.etag.clone(),
        version_id: info.version_id.clone(),
        content_key: key.key.clone(),
    }
}

impl Builder {
    pub fn new(map: LunMap, backends: Backends, shared: Option<Shared>) -> Builder {
        let (statics, catalog): (Vec<_>, Vec<_>) = map
            .known
            .iter()
            .cloned()
            .partition(|k| k.origin == Origin::Static);
        Builder {
            map,
            backends,
            catalog: catalog.iter().map(entry_of).collect(),
            statics,
            shared,
            unnumbered: 0,
            static_unavailable: 0,
        }
    }

    /// The state file's known images: the catalog's and the static S3 LUNs'.
    fn remember(&mut self) {
        self.map.known = self
            .catalog
            .iter()
            .map(|e| known_of(&e.image_id, e.origin, &e.url, &e.identity, &e.info, &e.key))
            .chain(self.statics.iter().cloned())
            .collect();
    }

    /// URL -> (content key, size) of the current catalog, for the next scan.
    pub fn previous(&self) -> HashMap<String, (String, u64)> {
        self.catalog
            .iter()
            .map(|e| (e.url.clone(), (e.key.key.clone(), e.info.size)))
            .collect()
    }

    /// Take a scan's result. Sources that could not be read keep their images.
    /// The state file's copy is rewritten by the build that follows (`build`).
    pub fn apply_scan(&mut self, scan: Scan) {
        self.catalog = super::merge::merge(&self.catalog, scan);
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
        let (items, unopened) = self.items(cfg, sync).await?;
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
                    // Numbers the map already gives are served even when it cannot be
                    // written (a fresh disk on a server refusing conditional writes).
                    if let Ok((numbers, _)) = shared.map.read().await {
                        self.map.adopt_unheld(&numbers);
                    }
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
                Err(e) if it.origin.is_catalog() => {
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
                        Backing::new(it.store, it.origin),
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
                if !b.from_catalog()
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
            // A static LUN that could not be opened keeps its number for its return.
            let keep: Vec<String> = identities.iter().chain(&unopened).cloned().collect();
            self.map.retire_others(&keep);
        }
        self.remember();
        self.map.retiring = retiring;
        self.map.save()?;
        info!(luns = luns.len(), "LUN table built");
        self.unnumbered = unnumbered;
        let mut served = ServedLuns::new(luns);
        served.retiring = self.map.retiring.iter().map(|r| r.lun).collect();
        Ok(served)
    }

    /// A static S3 LUN as the state file last knew it, opened without asking S3.
    fn open_known(&self, k: &KnownImage, identity: &str) -> anyhow::Result<Opened> {
        open_s3(
            &k.url,
            &info_of(k),
            &key_of(k),
            identity.to_string(),
            &self.backends,
        )
    }

    /// What the configuration and the catalog ask to serve, opened, and the static
    /// identities that could not be opened at all. A static S3 LUN is opened from
    /// its last known version without asking S3 when `!sync` (start-up), and when
    /// S3 cannot answer for it: its cached bytes are served, the rest is NOT READY
    /// until S3 answers again. One that cannot be opened is its own problem only.
    async fn items(
        &mut self,
        cfg: &Config,
        sync: bool,
    ) -> anyhow::Result<(Vec<Item>, Vec<String>)> {
        let mut items: Vec<Item> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut unopened = Vec::new();
        let mut statics = Vec::new();
        self.static_unavailable = 0;
        let start_by = tokio::time::Instant::now() + START_WAIT;
        for l in &cfg.luns {
            let identity = static_identity(l);
            if !seen.insert(identity.clone()) {
                bail!("image {identity} is configured twice");
            }
            let known = self
                .statics
                .iter()
                .find(|k| k.identity == identity && l.s3.as_ref() == Some(&k.url))
                .cloned();
            let opened = match (&known, sync) {
                (Some(k), false) => self.open_known(k, &identity),
                // Never seen, at start-up: S3 gets until the start deadline; one that
                // does not answer by then leaves the LUN to the first scan.
                (None, false) => {
                    match tokio::time::timeout_at(start_by, open_lun(l, &self.backends)).await {
                        Ok(r) => r,
                        Err(_) => {
                            warn!(image = %identity, "S3 did not answer at start: the LUN is opened by the first scan");
                            unopened.push(identity);
                            continue;
                        }
                    }
                }
                _ => open_lun(l, &self.backends).await,
            };
            let o = match (opened, known) {
                (Ok(o), _) => o,
                (Err(e), Some(k)) => {
                    self.static_unavailable += 1;
                    warn!(image = %identity, error = format!("{e:#}"), "static LUN unreadable: serving its last known version (cached bytes; NOT READY for the rest until S3 answers)");
                    match self.open_known(&k, &identity) {
                        Ok(o) => o,
                        Err(e) => {
                            error!(image = %identity, error = format!("{e:#}"), "static LUN not served");
                            unopened.push(identity);
                            continue;
                        }
                    }
                }
                (Err(e), None) => {
                    self.static_unavailable += 1;
                    error!(image = %identity, error = format!("{e:#}"), "static LUN not served: it cannot be opened (the other LUNs are)");
                    unopened.push(identity);
                    continue;
                }
            };
            if let (Some(url), Some((info, key))) = (&l.s3, &o.object) {
                statics.push(known_of(
                    &identity,
                    Origin::Static,
                    url,
                    &identity,
                    info,
                    key,
                ));
            }
            items.push(Item {
                identity: o.identity,
                version: o.version,
                pinned: l.lun,
                store: o.store,
                origin: Origin::Static,
                reservations: l.reservations.unwrap_or(false),
            });
        }
        // Unreadable ones stay known for their return.
        for k in &self.statics {
            if unopened.contains(&k.identity)
                || (!sync && !statics.iter().any(|s| s.identity == k.identity))
            {
                statics.push(k.clone());
            }
        }
        self.statics = statics;
        for e in &self.catalog {
            if seen.contains(&e.identity) {
                warn!(image = %e.image_id, "also configured statically: the [[lun]] entry wins");
                continue;
            }
            match open_s3(&e.url, &e.info, &e.key, e.identity.clone(), &self.backends) {
                // Catalog images are the shared boot images: never reservable.
                Ok(o) => {
                    seen.insert(o.identity.clone());
                    items.push(Item {
                        identity: o.identity,
                        version: o.version,
                        pinned: None,
                        store: o.store,
                        origin: e.origin,
                        reservations: false,
                    })
                }
                Err(err) => {
                    warn!(image = %e.image_id, error = format!("{err:#}"), "catalog image skipped")
                }
            }
        }
        Ok((items, unopened))
    }
}

/// One image to serve, opened, before it has a number.
struct Item {
    identity: String,
    version: String,
    pinned: Option<u64>,
    store: Arc<dyn BlockStore>,
    origin: Origin,
    reservations: bool,
}
