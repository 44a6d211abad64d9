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
//! The numbers an instance holds bind, whatever the object says (see
//! [`super::map_bindings`]): a map that contradicts them, was deleted or truncated is
//! rewritten from them. A map that does not parse or breaks the rules (a number twice,
//! a number out of range, a field we do not know) is reported and counted, and
//! rewritten only by an instance that holds numbers; one that holds none (a rebuilt
//! worker) keeps waiting for a good map.

use std::collections::{BTreeMap, HashSet};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tracing::{info, warn};

use super::map_bindings::{reconcile, Contradiction};
pub use super::numbers::{give_numbers, Damaged, Numbers};
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

#[derive(Debug, Clone, Error)]
pub enum MapError {
    #[error("the shared LUN map cannot be read or written: {0}")]
    Unreachable(StoreError),
    #[error("the shared LUN map is damaged ({kind}): {detail}")]
    Damaged { kind: &'static str, detail: String },
    #[error(
        "the S3 server ignores conditional writes ({0}): refusing the shared LUN map, \
         two instances could give one number to two images"
    )]
    Ignored(String),
    #[error(
        "the S3 server refuses conditional writes that must succeed ({0}): the shared \
         LUN map could be created but never updated"
    )]
    Refused(String),
    #[error("the shared LUN map kept changing under {0} attempts to add numbers")]
    Contended(u32),
    #[error("{0} is not an s3://bucket/key URL")]
    BadUrl(String),
}

impl From<Damaged> for MapError {
    fn from(d: Damaged) -> MapError {
        MapError::Damaged {
            kind: d.kind,
            detail: d.detail,
        }
    }
}

impl MapError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            MapError::Unreachable(_) => "unreachable",
            MapError::Damaged { kind, .. } => kind,
            MapError::Ignored(_) => "conditional_writes_ignored",
            MapError::Refused(_) => "conditional_writes_refused",
            MapError::Contended(_) => "contended",
            MapError::BadUrl(_) => "bad_url",
        }
    }
}

/// A [`PutCondition`] that owns its ETag (for the probe's futures).
enum OwnedCondition {
    IfMatch(String),
    IfNoneMatch,
    Always,
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

    /// The map object's bytes and the ETag they were read at; `None` if absent.
    async fn fetch(&self) -> Result<Option<(Bytes, Option<String>)>, MapError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .client
                .get_small_tagged(&self.bucket, &self.key, MAX_MAP)
                .await
            {
                Ok(found) => return Ok(Some(found)),
                Err(StoreError::NotFound(_)) => return Ok(None),
                // Rewritten between our HEAD and GET: a writer is at work; again.
                Err(StoreError::Stale(_)) if tries < 8 => {
                    tokio::time::sleep(jitter(50)).await;
                }
                Err(e) => return Err(MapError::Unreachable(e)),
            }
        }
    }

    /// The map and the ETag it was read at; an absent map is empty (and no ETag).
    pub async fn read(&self) -> Result<(Numbers, Option<String>), MapError> {
        match self.fetch().await? {
            None => Ok((Numbers::default(), None)),
            Some((bytes, etag)) => Ok((Numbers::parse(&bytes)?, etag)),
        }
    }

    /// Prove the server honours the conditional headers we rely on, both ways, on an
    /// object of our own next to the map: a create over an existing object and a
    /// replace with an ETag that matches nothing must both fail, and a replace with
    /// the right ETag must succeed (sent unquoted, as Ceph RGW needs, else quoted).
    pub async fn probe(&self) -> Result<(), MapError> {
        let mut tag = [0u8; 8];
        let _ = getrandom::getrandom(&mut tag);
        let key = format!("{}.probe-{}", self.key, hex::encode(tag));
        let put = |cond: PutCondition<'_>| {
            let body = Bytes::from_static(b"s3lun conditional write probe\n");
            let cond = match cond {
                PutCondition::IfMatch(e) => OwnedCondition::IfMatch(e.to_string()),
                PutCondition::IfNoneMatch => OwnedCondition::IfNoneMatch,
                PutCondition::Always => OwnedCondition::Always,
            };
            let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), key.clone());
            async move {
                let cond = match &cond {
                    OwnedCondition::IfMatch(e) => PutCondition::IfMatch(e),
                    OwnedCondition::IfNoneMatch => PutCondition::IfNoneMatch,
                    OwnedCondition::Always => PutCondition::Always,
                };
                client.put_if(&bucket, &key, body, cond).await
            }
        };
        let result = async {
            let etag = put(PutCondition::Always)
                .await
                .map_err(MapError::Unreachable)?;
            let create = put(PutCondition::IfNoneMatch).await;
            let replace = put(PutCondition::IfMatch("0123456789abcdef0123456789abcdef")).await;
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
            let Some(etag) = etag else {
                return Err(MapError::Refused(
                    "a PUT answered without an ETag".to_string(),
                ));
            };
            self.client.quote_put_if_match(false);
            match put(PutCondition::IfMatch(&etag)).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Stale(_)) => {}
                Err(e) => return Err(MapError::Unreachable(e)),
            }
            self.client.quote_put_if_match(true);
            match put(PutCondition::IfMatch(&etag)).await {
                Ok(_) => {
                    info!(map = %self.url(), "the S3 server matches a PUT's If-Match only quoted: sending it quoted");
                    Ok(())
                }
                Err(StoreError::Stale(_)) => {
                    self.client.quote_put_if_match(false);
                    Err(MapError::Refused(format!(
                        "If-Match with the object's own ETag {etag} fails (412), quoted and unquoted"
                    )))
                }
                Err(e) => Err(MapError::Unreachable(e)),
            }
        }
        .await;
        let _ = self.client.delete(&self.bucket, &key).await;
        result
    }

    /// The map with a number for every identity in `wanted`, for an instance that
    /// holds no numbers yet (see [`SharedMap::sync`]).
    pub async fn ensure(&self, wanted: &[(String, Option<u64>)]) -> Result<Numbers, MapError> {
        Ok(self
            .sync(wanted, &Numbers::default(), &HashSet::new())
            .await?
            .numbers)
    }

    /// The map with every binding in `held` (this instance's numbers, see
    /// [`super::map_bindings`]) and a number for every identity in `wanted`, written
    /// by conditional writes when it lacks any. A map that contradicts `held`, was
    /// deleted or is damaged is rewritten from `held` (a damaged one only by an
    /// instance that holds numbers: one that holds none cannot know them).
    pub async fn sync(
        &self,
        wanted: &[(String, Option<u64>)],
        held: &Numbers,
        served: &HashSet<String>,
    ) -> Result<Synced, MapError> {
        let mut backoff = 50u64;
        for attempt in 1..=self.attempts {
            let (numbers, etag, damaged) = match self.fetch().await? {
                None => (Numbers::default(), None, None),
                Some((bytes, etag)) => match Numbers::parse(&bytes) {
                    Ok(n) => (n, etag, None),
                    Err(e) if held.assigned.is_empty() => return Err(e.into()),
                    Err(e) => (Numbers::default(), etag, Some(e.into())),
                },
            };
            let absent = etag.is_none();
            let rec = reconcile(&numbers, held, served);
            let mut next = rec.numbers.clone();
            let added = next.extend(wanted);
            let synced = |numbers: Numbers| Synced {
                numbers,
                refused: rec.refused.clone(),
                retired: rec.retired.clone(),
                damaged: damaged.clone(),
            };
            // Nothing to write: the map is whole, has all we hold and want, and exists
            // (a deleted map is re-created as soon as anyone holds a number).
            let complete = damaged.is_none() && next == numbers;
            if complete && (!absent || next.assigned.is_empty()) {
                return Ok(synced(numbers));
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
                    let ours = held
                        .assigned
                        .iter()
                        .filter(|(id, _)| next.assigned.contains_key(*id))
                        .map(|(id, n)| (id.clone(), *n))
                        .chain(added.iter().cloned());
                    let mut kept = true;
                    for (k, n) in ours {
                        kept &= after.assigned.get(&k) == Some(&n);
                    }
                    if kept {
                        if !added.is_empty() {
                            info!(map = %self.url(), added = ?added, "shared LUN map: numbers assigned");
                        }
                        if !rec.refused.is_empty() || damaged.is_some() || absent {
                            info!(map = %self.url(), restored = rec.refused.len(), recreated = absent, "shared LUN map: rewritten with the numbers this instance holds");
                        }
                        return Ok(synced(after));
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

impl SharedMap {
    /// Retire LUN `number` for good (the operator's `s3lun lunmap retire`): the
    /// identity that holds it loses it, and the number is never given again. Every
    /// instance accepts the retirement where it does not serve that identity (one
    /// that does keeps its binding and restores it: see [`super::map_bindings`]).
    /// Returns the identity that held it (`None`: it was retired already).
    pub async fn retire(&self, number: u64) -> Result<Option<String>, MapError> {
        for _ in 0..self.attempts {
            let (mut numbers, etag) = self.read().await?;
            let Some(etag) = etag else {
                return Err(MapError::Unreachable(StoreError::NotFound(self.url())));
            };
            if numbers.retired.contains(&number) {
                return Ok(None);
            }
            let Some(identity) = numbers
                .assigned
                .iter()
                .find(|(_, &n)| n == number)
                .map(|(id, _)| id.clone())
            else {
                return Err(MapError::Damaged {
                    kind: "no_such_number",
                    detail: format!("LUN {number} is not in {}", self.url()),
                });
            };
            numbers.assigned.remove(&identity);
            numbers.retired.push(number);
            numbers.retired.sort_unstable();
            let body = serde_json::to_vec_pretty(&numbers).map_err(|e| {
                MapError::Unreachable(StoreError::Io {
                    path: self.url(),
                    msg: e.to_string(),
                })
            })?;
            let body = Bytes::from(body);
            match self
                .client
                .put_if(&self.bucket, &self.key, body, PutCondition::IfMatch(&etag))
                .await
            {
                Ok(_) => return Ok(Some(identity)),
                Err(StoreError::Stale(_) | StoreError::NotFound(_)) => {
                    tokio::time::sleep(jitter(200)).await;
                }
                Err(e) => return Err(MapError::Unreachable(e)),
            }
        }
        Err(MapError::Contended(self.attempts))
    }
}

/// What a [`SharedMap::sync`] found and left.
#[derive(Debug, Clone)]
pub struct Synced {
    /// The map as written (or read, when nothing was missing).
    pub numbers: Numbers,
    /// Map contents that contradicted what this instance holds: refused, restored.
    pub refused: Vec<Contradiction>,
    /// Bindings the map retired, accepted (this instance does not serve them).
    pub retired: Vec<(String, u64)>,
    /// The map object was damaged (and rewritten from what this instance holds).
    pub damaged: Option<MapError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::logical_unit::MAX_LUN;

    #[test]
    fn damaged_maps_are_named() {
        let kind = |b: &[u8]| Numbers::parse(b).err().map(|e| e.kind);
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
