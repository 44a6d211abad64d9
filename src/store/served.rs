//! What a target serves: the protocol's LUN table and, for each LUN, the store behind
//! it and when a session last read it. Sessions see only the table and ask for bytes
//! by LUN number; the connection tasks look the store up here. Published whole: a
//! change is a new `ServedLuns`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::BlockStore;
use crate::lun_table::{Lun, LunTable};

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Per-LUN counters for `/metrics` and `/status` (bounded labels: one series per LUN).
#[derive(Debug, Default)]
pub struct LunStats {
    /// READ commands that reached the store.
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    /// READs answered with an error (CHECK CONDITION).
    pub errors: AtomicU64,
}

/// Where a served image comes from. Kept in the state file (lowercase names), so an
/// IMS image is still an IMS image after a restart with IMS unreachable.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A `[[lun]]` of the configuration (or `--lun`).
    Static,
    /// A boot manifest found in a manifest bucket.
    Manifest,
    /// An object under a catalog prefix (PE images).
    Prefix,
    /// A boot manifest IMS links to.
    Ims,
}

impl Origin {
    pub const ALL: [Origin; 4] = [
        Origin::Static,
        Origin::Manifest,
        Origin::Prefix,
        Origin::Ims,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Static => "static",
            Origin::Manifest => "manifest",
            Origin::Prefix => "prefix",
            Origin::Ims => "ims",
        }
    }

    /// A catalog image: retires when it leaves the catalog, never reservable.
    pub fn is_catalog(self) -> bool {
        self != Origin::Static
    }

    pub fn parse(s: &str) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The store behind one LUN and what retirement needs to know about it. Carried
/// over whole when a LUN is unchanged, so its read clock and counters survive
/// rebuilds.
#[derive(Debug, Clone)]
pub struct Backing {
    pub store: Arc<dyn BlockStore>,
    pub stats: Arc<LunStats>,
    /// Unix seconds of the last read a session made of this LUN (0: never).
    pub last_read: Arc<AtomicU64>,
    /// Where the image comes from: a catalog image retires when it leaves the
    /// catalog, a `[[lun]]` when the configuration drops it.
    pub origin: Origin,
}

impl Backing {
    pub fn new(store: Arc<dyn BlockStore>, origin: Origin) -> Backing {
        Backing {
            store,
            stats: Arc::default(),
            last_read: Arc::new(AtomicU64::new(0)),
            origin,
        }
    }

    pub fn from_catalog(&self) -> bool {
        self.origin.is_catalog()
    }

    /// A session read this LUN now. Stored once a second at most: every session's
    /// reads of a shared image land here, and a store per READ would bounce the
    /// cache line between cores.
    pub fn touch(&self) {
        let now = unix_now();
        if self.last_read.load(Ordering::Relaxed) != now {
            self.last_read.store(now, Ordering::Relaxed);
        }
    }

    pub fn last_read(&self) -> u64 {
        self.last_read.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct ServedLuns {
    pub table: Arc<LunTable>,
    backing: BTreeMap<u64, Backing>,
    /// LUN numbers of images that left the catalog and are kept for their readers.
    pub retiring: Vec<u64>,
}

impl ServedLuns {
    /// The LUNs and their stores; of two with one number, the first wins.
    pub fn new(luns: Vec<(Arc<Lun>, Backing)>) -> ServedLuns {
        let mut backing = BTreeMap::new();
        let mut table = Vec::with_capacity(luns.len());
        for (lun, b) in luns {
            if let std::collections::btree_map::Entry::Vacant(e) = backing.entry(lun.info.lun) {
                e.insert(b);
                table.push(lun);
            }
        }
        ServedLuns {
            table: Arc::new(LunTable::new(table)),
            backing,
            retiring: Vec::new(),
        }
    }

    /// One image as LUN 0, its LIO identity computed from `identity`.
    pub fn single(store: Arc<dyn BlockStore>, identity: &str) -> ServedLuns {
        let table = LunTable::single(store.size(), identity);
        ServedLuns {
            table: Arc::new(table),
            backing: BTreeMap::from([(0, Backing::new(store, Origin::Static))]),
            retiring: Vec::new(),
        }
    }

    /// The same LUNs (the same table and stores: sessions see no change) with
    /// another set of retiring LUNs.
    pub fn with_retiring(&self, retiring: Vec<u64>) -> ServedLuns {
        ServedLuns {
            table: Arc::clone(&self.table),
            backing: self.backing.clone(),
            retiring,
        }
    }

    pub fn store(&self, lun: u64) -> Option<&Arc<dyn BlockStore>> {
        self.backing.get(&lun).map(|b| &b.store)
    }

    pub fn backing(&self, lun: u64) -> Option<&Backing> {
        self.backing.get(&lun)
    }

    /// Every LUN with its backing, by LUN number.
    pub fn backings(&self) -> impl Iterator<Item = (&Arc<Lun>, &Backing)> {
        self.table
            .iter()
            .filter_map(|l| Some((l, self.backing.get(&l.info.lun)?)))
    }

    /// Every LUN with its store, by LUN number.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Lun>, &Arc<dyn BlockStore>)> {
        self.backings().map(|(l, b)| (l, &b.store))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
