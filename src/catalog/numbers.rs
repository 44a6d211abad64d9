//! The fleet's LUN numbers as the map object holds them, the rules an object must
//! keep to be one, and how new identities get numbers: shared by the map in S3
//! ([`super::shared_map`]), the rules for what an instance holds
//! ([`super::map_bindings`]) and the local state file ([`super::lun_numbers`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::scsi::logical_unit::MAX_LUN;

/// A map object that breaks the rules: `kind` is the metric label.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{kind}: {detail}")]
pub struct Damaged {
    pub kind: &'static str,
    pub detail: String,
}

/// What the map object holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Numbers {
    /// Image identity -> LUN number, for good: an image that leaves the catalog
    /// keeps its number, so it gets the same one if it comes back.
    pub assigned: BTreeMap<String, u64>,
    /// Numbers taken out of use by an operator: never given to any identity.
    #[serde(default)]
    pub retired: Vec<u64>,
}

impl Numbers {
    /// Parse and check a map object.
    pub fn parse(bytes: &[u8]) -> Result<Numbers, Damaged> {
        let n: Numbers = serde_json::from_slice(bytes).map_err(|e| Damaged {
            kind: "invalid_json",
            detail: e.to_string(),
        })?;
        let mut owner: BTreeMap<u64, &str> = BTreeMap::new();
        let all = n
            .assigned
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .chain(n.retired.iter().map(|&r| ("(retired)", r)));
        for (who, num) in all {
            if num > MAX_LUN {
                return Err(Damaged {
                    kind: "out_of_range",
                    detail: format!("{who} has LUN {num}, above {MAX_LUN}"),
                });
            }
            if let Some(first) = owner.insert(num, who) {
                return Err(Damaged {
                    kind: "duplicate_number",
                    detail: format!("LUN {num} is given to both {first} and {who}"),
                });
            }
        }
        Ok(n)
    }

    /// Add what `wanted` lacks (see [`give_numbers`]). Returns what was added.
    pub fn extend(&mut self, wanted: &[(String, Option<u64>)]) -> Vec<(String, u64)> {
        give_numbers(&mut self.assigned, &self.retired, wanted)
    }
}

/// Give every identity of `wanted` that has no number one: a pinned identity its pin
/// if nobody holds it (pins that clash are left for the caller to report), any other
/// the lowest number never used. One walk over the numbers for the whole catalog
/// (thousands of images), the same for the fleet's map and an instance's own.
/// Returns what was added; once no number is left, the rest get none.
pub fn give_numbers(
    assigned: &mut BTreeMap<String, u64>,
    retired: &[u64],
    wanted: &[(String, Option<u64>)],
) -> Vec<(String, u64)> {
    let mut used: std::collections::HashSet<u64> = assigned.values().copied().collect();
    used.extend(retired.iter().copied());
    // Free pins first, so that no unpinned image takes one.
    let granted: std::collections::HashSet<&String> = wanted
        .iter()
        .filter(|(id, pin)| pin.is_some_and(|p| !assigned.contains_key(id) && used.insert(p)))
        .map(|(id, _)| id)
        .collect();
    let mut free = (0..=MAX_LUN).filter(|n| !used.contains(n));
    let mut added = Vec::new();
    for (identity, pin) in wanted {
        if assigned.contains_key(identity) {
            continue;
        }
        let n = match pin {
            Some(p) if granted.contains(identity) => *p,
            Some(_) => continue,
            None => match free.next() {
                Some(n) => n,
                None => break,
            },
        };
        assigned.insert(identity.clone(), n);
        added.push((identity.clone(), n));
    }
    added
}
