//! What a target serves: the protocol's LUN table and the store behind each LUN.
//! Sessions see only the table and ask for bytes by LUN number; the connection tasks
//! look the store up here. Published whole: a change is a new `ServedLuns`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::BlockStore;
use crate::lun_table::{Lun, LunTable};

#[derive(Debug, Default)]
pub struct ServedLuns {
    pub table: Arc<LunTable>,
    stores: BTreeMap<u64, Arc<dyn BlockStore>>,
}

impl ServedLuns {
    /// The LUNs and their stores; of two with one number, the first wins.
    pub fn new(luns: Vec<(Arc<Lun>, Arc<dyn BlockStore>)>) -> ServedLuns {
        let mut stores = BTreeMap::new();
        let mut table = Vec::with_capacity(luns.len());
        for (lun, store) in luns {
            if let std::collections::btree_map::Entry::Vacant(e) = stores.entry(lun.info.lun) {
                e.insert(store);
                table.push(lun);
            }
        }
        ServedLuns {
            table: Arc::new(LunTable::new(table)),
            stores,
        }
    }

    /// One image as LUN 0, its LIO identity computed from `identity`.
    pub fn single(store: Arc<dyn BlockStore>, identity: &str) -> ServedLuns {
        let table = LunTable::single(store.size(), identity);
        ServedLuns {
            table: Arc::new(table),
            stores: BTreeMap::from([(0, store)]),
        }
    }

    pub fn store(&self, lun: u64) -> Option<&Arc<dyn BlockStore>> {
        self.stores.get(&lun)
    }

    /// Every LUN with its store, by LUN number.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Lun>, &Arc<dyn BlockStore>)> {
        self.table
            .iter()
            .filter_map(|l| Some((l, self.stores.get(&l.info.lun)?)))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
