//! The set of LUNs a target presents: what SCSI knows of each (size, identity,
//! reservation state) and which version of its image it serves. The bytes behind a
//! LUN are the I/O layer's business: the session asks for them by LUN number. A
//! table is immutable; a change publishes a new one.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::scsi::reservation::LuState;
use crate::scsi::{Identity, LunInfo};

#[derive(Debug)]
pub struct Lun {
    pub info: LunInfo,
    /// Which bytes the store serves: the content key of an S3 image, the path of a
    /// file. A new version of the same image is a change sessions must hear about.
    pub version: String,
    /// Reservations, shared by every session.
    pub state: Mutex<LuState>,
}

impl Lun {
    pub fn new(info: LunInfo, version: String) -> Lun {
        Lun {
            info,
            version,
            state: Mutex::new(LuState::default()),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, LuState> {
        // The state stays consistent across a panic elsewhere: every update is a
        // single assignment.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
pub struct LunTable {
    /// Sorted by LUN number.
    luns: Vec<Arc<Lun>>,
    numbers: Vec<u64>,
}

impl LunTable {
    pub fn new(mut luns: Vec<Arc<Lun>>) -> LunTable {
        luns.sort_by_key(|l| l.info.lun);
        luns.dedup_by_key(|l| l.info.lun);
        let numbers = luns.iter().map(|l| l.info.lun).collect();
        LunTable { luns, numbers }
    }

    /// One image of `size` bytes as LUN 0, its LIO identity computed from `identity`.
    pub fn single(size: u64, identity: &str) -> LunTable {
        let info = LunInfo::new(0, size, Identity::lio(identity));
        LunTable::new(vec![Arc::new(Lun::new(info, identity.into()))])
    }

    pub fn get(&self, lun: u64) -> Option<&Arc<Lun>> {
        self.numbers.binary_search(&lun).ok().map(|i| &self.luns[i])
    }

    pub fn numbers(&self) -> &[u64] {
        &self.numbers
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Lun>> {
        self.luns.iter()
    }

    /// Whether both tables present the same LUNs with the same images.
    pub fn same_as(&self, other: &LunTable) -> bool {
        self.luns.len() == other.luns.len()
            && self.luns.iter().zip(other.luns.iter()).all(|(a, b)| {
                a.info.lun == b.info.lun
                    && a.info.identity.source == b.info.identity.source
                    && a.info.size_bytes == b.info.size_bytes
                    && a.info.reservations == b.info.reservations
                    && a.version == b.version
            })
    }

    pub fn len(&self) -> usize {
        self.luns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.luns.is_empty()
    }
}
