//! The fleet's LUN numbers, kept as one JSON object in S3 that every instance reads
//! and only changes by conditional writes: a new image gets its number the first time
//! any instance sees it, the same number on every worker, never reused.
//!
//! A writer reads the map and its ETag, adds what it lacks, and writes it back with
//! `If-Match` on that ETag (`If-None-Match: *` to create it); a 412 (or 409, a
//! conditional write racing another) means someone else wrote first: read again and
//! retry after a jittered backoff. After a write the map is read again a moment later
//! and the writer's numbers must be in it: a server whose precondition check and store
//! are not one step can lose an update, and this turns that into a retry instead of
//! two instances believing different numbers.
//!
//! A map that does not parse or breaks the rules (a number twice, a number out of
//! range, a field we do not know) is never written over: the caller keeps its last
//! good copy and counts the error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use crate::scsi::logical_unit::MAX_LUN;
use crate::store::s3::{parse_url, PutCondition, S3Client};
use crate::store::StoreError;

/// A map object bigger than this is not ours.
const MAX_MAP: u64 = 16 << 20;

/// What the metrics say about the shared map.
#[derive(Debug, Default)]
pub struct MapStats {
    /// Successful reads-or-writes of the map.
    pub syncs: AtomicU64,
    /// Failures by kind (unreachable, invalid_json, duplicate_number, ...).
    pub errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl MapStats {
    pub fn synced(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, kind: &'static str) {
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(kind).or_default() += 1;
    }
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
    pub fn parse(bytes: &[u8]) -> Result<Numbers, MapError> {
        let n: Numbers = serde_json::from_slice(bytes).map_err(|e| MapError::Damaged {
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
                return Err(MapError::Damaged {
                    kind: "out_of_range",
                    detail: format!("{who} has LUN {num}, above {MAX_LUN}"),
                });
            }
            if let Some(first) = owner.insert(num, who) {
                return Err(MapError::Damaged {
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

#[derive(Debug, Error)]
pub enum MapError {
    #[error("the shared LUN map cannot be read or written: {0}")]
    Unreachable(StoreError),
    #[error("the shared LUN map is damaged ({kind}): {detail}; it is left as it is")]
    Damaged { kind: &'static str, detail: String },
    #[error(
        "the S3 server ignores conditional writes ({0}): refusing the shared LUN map, \
         two instances could give one number to two images"
    )]
    Ignored(String),
    #[error("the shared LUN map kept changing under {0} attempts to add numbers")]
    Contended(u32),
    #[error("{0} is not an s3://bucket/key URL")]
    BadUrl(String),
}

impl MapError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            MapError::Unreachable(_) => "unreachable",
            MapError::Damaged { kind, .. } => kind,
            MapError::Ignored(_) => "conditional_writes_ignored",
            MapError::Contended(_) => "contended",
            MapError::BadUrl(_) => "bad_url",
        }
    }
}

/// The map object and how to change it.
#[derive(Debug, Clone)]
pub struct SharedMap {
    client: S3Client,
    bucket: String,
    key: String,
    /// How long after a write to read the map back.
    pub settle: Duration,
    /// Writes tried before giving up for this scan.
    pub attempts: u32,
}

/// A random number of milliseconds below `max`, so racing writers spread out.
fn jitter(max: u64) -> Duration {
    let mut b = [0u8; 8];
    // Without randomness every writer waits the most: slower, still correct.
    let r = match getrandom::getrandom(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => u64::MAX,
    };
    Duration::from_millis(r % max.max(1))
}

impl SharedMap {
    pub fn new(client: S3Client, url: &str) -> Result<SharedMap, MapError> {
        let (bucket, key) = parse_url(url).ok_or_else(|| MapError::BadUrl(url.into()))?;
        Ok(SharedMap {
            client,
            bucket,
            key,
            settle: Duration::from_millis(200),
            attempts: 12,
        })
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The map and the ETag it was read at; an absent map is empty (and no ETag).
    pub async fn read(&self) -> Result<(Numbers, Option<String>), MapError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .client
                .get_small_tagged(&self.bucket, &self.key, MAX_MAP)
                .await
            {
                Ok((bytes, etag)) => return Ok((Numbers::parse(&bytes)?, etag)),
                Err(StoreError::NotFound(_)) => return Ok((Numbers::default(), None)),
                // Rewritten between our HEAD and GET: a writer is at work; again.
                Err(StoreError::Stale(_)) if tries < 8 => {
                    tokio::time::sleep(jitter(50)).await;
                }
                Err(e) => return Err(MapError::Unreachable(e)),
            }
        }
    }

    /// Prove the server honours the conditional headers we rely on, on an object of
    /// our own next to the map: a create over an existing object and a replace with
    /// an ETag that matches nothing must both fail.
    pub async fn probe(&self) -> Result<(), MapError> {
        let mut tag = [0u8; 8];
        let _ = getrandom::getrandom(&mut tag);
        let key = format!("{}.probe-{}", self.key, hex::encode(tag));
        let put = |cond| {
            let body = Bytes::from_static(b"s3lun conditional write probe\n");
            self.client.put_if(&self.bucket, &key, body, cond)
        };
        put(PutCondition::Always)
            .await
            .map_err(MapError::Unreachable)?;
        let create = put(PutCondition::IfNoneMatch).await;
        let replace = put(PutCondition::IfMatch("0123456789abcdef0123456789abcdef")).await;
        let _ = self.client.delete(&self.bucket, &key).await;
        for (what, r) in [
            ("If-None-Match: * over an existing object", create),
            ("If-Match with an ETag that matches nothing", replace),
        ] {
            match r {
                Err(StoreError::Stale(_)) => {}
                Ok(_) => return Err(MapError::Ignored(format!("{what} succeeded"))),
                Err(e) => return Err(MapError::Unreachable(e)),
            }
        }
        Ok(())
    }

    /// The map with a number for every identity in `wanted`, written by conditional
    /// writes if some were missing. Pinned identities take their pin when it is free.
    pub async fn ensure(&self, wanted: &[(String, Option<u64>)]) -> Result<Numbers, MapError> {
        let mut backoff = 50u64;
        for attempt in 1..=self.attempts {
            let (numbers, etag) = self.read().await?;
            let mut next = numbers.clone();
            let added = next.extend(wanted);
            if added.is_empty() {
                return Ok(numbers);
            }
            let body = match serde_json::to_vec_pretty(&next) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    return Err(MapError::Unreachable(StoreError::Io {
                        path: self.url(),
                        msg: e.to_string(),
                    }))
                }
            };
            let cond = match &etag {
                Some(e) => PutCondition::IfMatch(e),
                None => PutCondition::IfNoneMatch,
            };
            match self
                .client
                .put_if(&self.bucket, &self.key, body, cond)
                .await
            {
                Ok(_) => {
                    tokio::time::sleep(self.settle).await;
                    let (after, _) = self.read().await?;
                    if added.iter().all(|(k, n)| after.assigned.get(k) == Some(n)) {
                        info!(map = %self.url(), added = ?added, "shared LUN map: numbers assigned");
                        return Ok(after);
                    }
                    warn!(map = %self.url(), attempt, "shared LUN map: our write was lost to another; retrying");
                }
                // Another instance wrote first (or deleted the map): start over.
                Err(StoreError::Stale(_) | StoreError::NotFound(_)) => {
                    info!(map = %self.url(), attempt, "shared LUN map changed under us; retrying");
                }
                Err(e) => return Err(MapError::Unreachable(e)),
            }
            tokio::time::sleep(Duration::from_millis(backoff) + jitter(backoff)).await;
            backoff = (backoff * 2).min(2000);
        }
        Err(MapError::Contended(self.attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_maps_are_named() {
        let kind = |b: &[u8]| Numbers::parse(b).err().map(|e| e.kind());
        assert_eq!(kind(b"{not json"), Some("invalid_json"));
        assert_eq!(
            kind(br#"{"assigned":{"a":1,"b":1}}"#),
            Some("duplicate_number")
        );
        assert_eq!(
            kind(br#"{"assigned":{"a":1},"retired":[1]}"#),
            Some("duplicate_number")
        );
        assert_eq!(kind(br#"{"assigned":{"a":16384}}"#), Some("out_of_range"));
        assert_eq!(kind(br#"{"assigned":{},"extra":1}"#), Some("invalid_json"));
        assert_eq!(kind(br#"{"assigned":{"a":0},"retired":[3]}"#), None);
    }

    #[test]
    fn extend_stops_at_the_last_number() {
        let mut n = Numbers {
            assigned: BTreeMap::new(),
            retired: (0..MAX_LUN).collect(),
        };
        let wanted = vec![("a".to_string(), None), ("b".to_string(), None)];
        assert_eq!(n.extend(&wanted), vec![("a".to_string(), MAX_LUN)]);
        assert!(n.extend(&wanted).is_empty());
    }

    #[test]
    fn extend_takes_free_pins_and_lowest_free_numbers() {
        let mut n = Numbers::parse(br#"{"assigned":{"a":0},"retired":[1]}"#).unwrap();
        let added = n.extend(&[
            ("a".into(), None),
            ("b".into(), None),
            ("c".into(), Some(0)),
            ("d".into(), Some(7)),
        ]);
        assert_eq!(added, [("b".to_string(), 2), ("d".to_string(), 7)]);
        assert!(
            !n.assigned.contains_key("c"),
            "0 belongs to a: the clash is the caller's"
        );
        assert!(n.extend(&[("a".into(), None)]).is_empty());
    }
}
