//! Stable LUN numbers: a small JSON state file mapping each image's identity to the
//! LUN it was given. A number is never handed to another image, even after its image
//! is gone, so a node that cached "LUN 3" never reads the wrong image.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::numbers::{give_numbers, Numbers};
use crate::store::served::Origin;

/// The state file's format. 1 (no `format` key): origins were free strings and
/// static S3 LUNs were not kept; 2: typed origins, static S3 LUNs kept too.
pub const FORMAT: u32 = 2;

/// A catalog image as last seen, so a restart can serve it before the first scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnownImage {
    pub image_id: String,
    pub origin: Origin,
    pub url: String,
    pub identity: String,
    pub size: u64,
    /// The object's ETag at the last HEAD: it guards every read.
    pub etag: Option<String>,
    /// The object's version id (versioned buckets): part of its cache namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub content_key: String,
}

/// A LUN kept for its readers after its image left the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retiring {
    pub lun: u64,
    pub identity: String,
    /// Unix seconds of the last read a session made of it.
    pub last_read: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LunMap {
    /// [`FORMAT`] when written; absent in the first format.
    #[serde(default)]
    format: u32,
    /// Identity string -> LUN number.
    assigned: BTreeMap<String, u64>,
    /// Numbers whose image went away; kept so they are never reused.
    retired: Vec<u64>,
    /// The catalog's images at its last successful scan.
    #[serde(default)]
    pub known: Vec<KnownImage>,
    /// Images that left the catalog and are kept while sessions read them.
    #[serde(default)]
    pub retiring: Vec<Retiring>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

/// LUN numbers above this cannot be addressed with the flat addressing we use.
pub use crate::scsi::logical_unit::MAX_LUN;

impl LunMap {
    /// Load the map, or start an empty one if the file does not exist yet. A corrupt
    /// file is an error: silently renumbering LUNs would be worse than not starting.
    pub fn load(path: &Path) -> anyhow::Result<LunMap> {
        let mut map = match std::fs::read(path) {
            Ok(bytes) => LunMap::parse(&bytes)
                .with_context(|| format!("parsing LUN state file {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LunMap::ephemeral(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        map.path = Some(path.to_path_buf());
        Ok(map)
    }

    /// Parse a state file of any format this version knows, migrating older ones:
    /// format 1's origins were strings, of which only "prefix", "manifest" and
    /// "ims" were ever written.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<LunMap> {
        let mut v: serde_json::Value = serde_json::from_slice(bytes)?;
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
        if format > u64::from(FORMAT) {
            anyhow::bail!("state file format {format} is newer than this s3lun ({FORMAT})");
        }
        if format < 2 {
            if let Some(known) = v.get_mut("known").and_then(|k| k.as_array_mut()) {
                for k in known {
                    let was = k.get("origin").and_then(|o| o.as_str()).unwrap_or("");
                    let now = Origin::parse(was)
                        .filter(|o| o.is_catalog())
                        .unwrap_or(Origin::Manifest);
                    k["origin"] = serde_json::Value::from(now.as_str());
                }
            }
        }
        let mut map: LunMap = serde_json::from_value(v)?;
        map.format = FORMAT;
        Ok(map)
    }

    /// An in-memory map (no state file configured).
    pub fn ephemeral() -> LunMap {
        LunMap {
            format: FORMAT,
            ..LunMap::default()
        }
    }

    fn used(&self, n: u64) -> bool {
        self.assigned.values().any(|&v| v == n) || self.retired.contains(&n)
    }

    /// Numbers for every identity of `wanted` that has none, in one pass (see
    /// [`give_numbers`]): a catalog of thousands of new images costs one walk over
    /// the numbers, not one each. The unpinned identities left without a number
    /// once all are used are returned (a pin that clashes is [`Self::assign`]'s to
    /// report).
    pub fn assign_all(&mut self, wanted: &[(String, Option<u64>)]) -> Vec<String> {
        give_numbers(&mut self.assigned, &self.retired, wanted);
        wanted
            .iter()
            .filter(|(id, pin)| pin.is_none() && !self.assigned.contains_key(id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Number for `identity`: the one it had, the one the configuration pins, or the
    /// lowest number never used.
    pub fn assign(&mut self, identity: &str, pinned: Option<u64>) -> anyhow::Result<u64> {
        if let Some(p) = pinned {
            if let Some((other, _)) = self
                .assigned
                .iter()
                .find(|(k, &v)| v == p && *k != identity)
            {
                anyhow::bail!("LUN {p} is pinned for {identity} but belongs to {other}");
            }
            self.retired.retain(|&r| r != p);
            self.assigned.insert(identity.to_string(), p);
            return Ok(p);
        }
        if let Some(&n) = self.assigned.get(identity) {
            return Ok(n);
        }
        let wanted = [(identity.to_string(), None)];
        give_numbers(&mut self.assigned, &self.retired, &wanted)
            .first()
            .map(|(_, n)| *n)
            .context("no free LUN numbers left")
    }

    /// Take the fleet's numbers (the shared map) as ours: the state file then holds
    /// the last known copy of the shared map.
    /// The numbers this instance holds (bindings and retired numbers), as the
    /// shared map's form.
    pub fn held(&self) -> Numbers {
        Numbers {
            assigned: self.assigned.clone(),
            retired: self.retired.clone(),
        }
    }

    pub fn adopt(&mut self, shared: &Numbers) {
        self.assigned = shared.assigned.clone();
        self.retired = shared.retired.clone();
    }

    /// Take the shared map's bindings for identities this instance holds none for,
    /// where the number is free here: a worker that cannot write the map (a fresh
    /// disk on a server refusing conditional writes) still serves what the map
    /// already numbers. Bindings held here win.
    pub fn adopt_unheld(&mut self, shared: &Numbers) {
        for (identity, &n) in &shared.assigned {
            if !self.assigned.contains_key(identity) && !self.used(n) {
                self.assigned.insert(identity.clone(), n);
            }
        }
    }

    /// The number the shared map gives `identity` (None: none yet), checked against
    /// its pin. Never a new number: only a write to the shared map makes those.
    pub fn lookup(&self, identity: &str, pinned: Option<u64>) -> anyhow::Result<Option<u64>> {
        let have = self.assigned.get(identity).copied();
        match (have, pinned) {
            (Some(n), Some(p)) if n != p => {
                anyhow::bail!("{identity} is pinned to LUN {p} but the shared LUN map gives it {n}")
            }
            (None, Some(p)) if self.used(p) => {
                let owner = self
                    .assigned
                    .iter()
                    .find(|(_, &v)| v == p)
                    .map_or("a retired number", |(k, _)| k.as_str());
                anyhow::bail!(
                    "LUN {p} is pinned for {identity} but the shared LUN map gives it to {owner}"
                )
            }
            (have, _) => Ok(have),
        }
    }

    /// Retire every identity not in `live`: its number stays reserved.
    pub fn retire_others(&mut self, live: &[String]) {
        let live: HashSet<&String> = live.iter().collect();
        let gone: Vec<String> = self
            .assigned
            .keys()
            .filter(|k| !live.contains(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(n) = self.assigned.remove(&k) {
                self.retired.push(n);
            }
        }
        self.retired.sort_unstable();
        self.retired.dedup();
    }

    /// Write the map atomically (temp file, fsync, rename).
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_format_state_file_is_migrated_and_a_newer_one_refused() {
        let v1 = br#"{"assigned":{"a":0,"b":1,"c":2},"retired":[3],"known":[
            {"image_id":"x","origin":"ims","url":"s3://b/x","identity":"a","size":1,"etag":"e","content_key":"k"},
            {"image_id":"y","origin":"prefix","url":"s3://b/y","identity":"b","size":1,"etag":"e","content_key":"k"},
            {"image_id":"z","origin":"something-else","url":"s3://b/z","identity":"c","size":1,"etag":"e","content_key":"k"}]}"#;
        let m = LunMap::parse(v1).unwrap();
        let origins: Vec<Origin> = m.known.iter().map(|k| k.origin).collect();
        assert_eq!(origins, [Origin::Ims, Origin::Prefix, Origin::Manifest]);
        assert_eq!(m.format, FORMAT);
        assert_eq!(m.assigned.get("b"), Some(&1));
        // Written back as the current format, and read again the same.
        let again = LunMap::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again, m);
        let newer = br#"{"format":99,"assigned":{},"retired":[]}"#;
        assert!(LunMap::parse(newer).is_err());
    }

    #[test]
    fn every_number_once_then_nothing_left() {
        let mut m = LunMap::ephemeral();
        m.retired = vec![5];
        let mut wanted: Vec<(String, Option<u64>)> = (0..=MAX_LUN + 2)
            .map(|i| (format!("img{i}"), None))
            .collect();
        wanted.push(("pinned".into(), Some(9)));
        let left = m.assign_all(&wanted);
        // 16,386 images for 16,384 numbers, one retired, one pinned: four wait.
        let waiting: Vec<String> = (MAX_LUN - 1..=MAX_LUN + 2)
            .map(|i| format!("img{i}"))
            .collect();
        assert_eq!(left, waiting);
        let numbers: HashSet<u64> = m.assigned.values().copied().collect();
        assert_eq!(numbers.len(), m.assigned.len(), "a number given twice");
        assert!(!numbers.contains(&5) && !numbers.contains(&9));
        assert_eq!(m.assign("pinned", Some(9)).unwrap(), 9);
        // Stable: the next pass gives nobody a new number.
        let before = m.assigned.clone();
        assert_eq!(m.assign_all(&wanted).len(), 4);
        assert_eq!(m.assigned, before);
    }

    #[test]
    fn numbers_are_stable_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("luns.json");
        let mut m = LunMap::load(&p).unwrap();
        assert_eq!(m.assign("a", None).unwrap(), 0);
        assert_eq!(m.assign("b", None).unwrap(), 1);
        m.retire_others(&["b".into()]);
        m.save().unwrap();
        let mut m = LunMap::load(&p).unwrap();
        assert_eq!(m.assign("b", None).unwrap(), 1);
        assert_eq!(
            m.assign("c", None).unwrap(),
            2,
            "0 belonged to a: not reused"
        );
        assert_eq!(
            m.assign("a", Some(0)).unwrap(),
            0,
            "pinning may revive a retired number"
        );
        assert!(m.assign("d", Some(1)).is_err(), "1 belongs to b");
        std::fs::write(&p, b"{not json").unwrap();
        assert!(LunMap::load(&p).is_err());
    }

    #[test]
    fn the_shared_map_gives_numbers_and_pins_that_clash_are_errors() {
        let mut m = LunMap::ephemeral();
        let shared = Numbers::parse(br#"{"assigned": {"a": 0, "b": 4}, "retired": [7]}"#).unwrap();
        m.adopt(&shared);
        assert_eq!(m.lookup("a", None).unwrap(), Some(0));
        assert_eq!(m.lookup("b", Some(4)).unwrap(), Some(4));
        assert_eq!(
            m.lookup("new", None).unwrap(),
            None,
            "never a number of its own"
        );
        let e = m.lookup("a", Some(2)).unwrap_err().to_string();
        assert!(
            e.contains("pinned to LUN 2") && e.contains("gives it 0"),
            "{e}"
        );
        let e = m.lookup("c", Some(4)).unwrap_err().to_string();
        assert!(e.contains("gives it to b"), "{e}");
        assert!(m.lookup("c", Some(7)).is_err(), "a retired number");
    }
}
