//! One scan's result merged with the catalog served before it: a source that could
//! not be read keeps its images as last seen; every other source's images are what
//! this scan found. Pure, and property-tested: a failure in one source never
//! removes another's images, nor keeps a healthy source's stale ones.

use std::collections::HashSet;

use super::scan::{Entry, Scan};

/// The catalog after `scan`, given the catalog `previous` served.
pub fn merge(previous: &[Entry], scan: Scan) -> Vec<Entry> {
    let mut entries = scan.entries;
    if scan.failed_sources.is_empty() {
        return entries;
    }
    let have: HashSet<String> = entries.iter().map(|e| e.url.clone()).collect();
    for old in previous {
        let from_failed = scan
            .failed_sources
            .iter()
            .any(|src| src.covers(old.origin, &old.url));
        if from_failed && !have.contains(&old.url) {
            entries.push(old.clone());
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::scan::Source;
    use crate::store::key::{ContentKey, KeySource};
    use crate::store::s3::ObjectInfo;
    use crate::store::served::Origin;
    use proptest::prelude::*;

    /// The images each source can hold: (origin, url).
    fn pool() -> Vec<(Origin, String)> {
        let mut p = Vec::new();
        for i in 0..4 {
            p.push((Origin::Manifest, format!("s3://boot/m{i}/rootfs")));
            p.push((Origin::Prefix, format!("s3://pe/A/img{i}")));
            p.push((Origin::Prefix, format!("s3://pe/B/img{i}")));
            p.push((Origin::Ims, format!("s3://ims/i{i}/rootfs")));
        }
        p
    }

    fn sources() -> [Source; 4] {
        [
            Source::Bucket("boot".into()),
            Source::Prefix("s3://pe/A/".into()),
            Source::Prefix("s3://pe/B/".into()),
            Source::Ims,
        ]
    }

    fn entry(origin: Origin, url: &str) -> Entry {
        Entry {
            image_id: url.into(),
            origin,
            url: url.into(),
            identity: url.into(),
            info: ObjectInfo {
                size: 1,
                etag: Some("e".into()),
                version_id: None,
                metadata: Default::default(),
            },
            key: ContentKey {
                key: "e".into(),
                source: KeySource::HeadEtag,
                stale_manifest: None,
            },
            notes: Vec::new(),
        }
    }

    /// One scan: per source, failed or the subset (bit mask) of its pool found.
    fn scans() -> impl Strategy<Value = Vec<[(bool, u8); 4]>> {
        proptest::collection::vec(proptest::array::uniform4((any::<bool>(), 0u8..16)), 1..30)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_failed_source_keeps_its_images_and_touches_no_other(seq in scans()) {
            let pool = pool();
            let srcs = sources();
            let mut catalog: Vec<Entry> = Vec::new();
            for step in seq {
                let mut scan = Scan::default();
                for (s, (failed, mask)) in srcs.iter().zip(step) {
                    if failed {
                        scan.failed_sources.push(s.clone());
                        continue;
                    }
                    let mine = pool.iter().filter(|(o, u)| s.covers(*o, u));
                    for (i, (o, u)) in mine.enumerate() {
                        if mask & (1 << i) != 0 {
                            scan.entries.push(entry(*o, u));
                        }
                    }
                }
                let found: HashSet<String> = scan.entries.iter().map(|e| e.url.clone()).collect();
                let failed = scan.failed_sources.clone();
                let before: HashSet<String> = catalog.iter().map(|e| e.url.clone()).collect();
                catalog = merge(&catalog, scan);
                let now: Vec<String> = catalog.iter().map(|e| e.url.clone()).collect();
                let set: HashSet<String> = now.iter().cloned().collect();
                prop_assert_eq!(set.len(), now.len(), "an image twice");
                for (o, u) in &pool {
                    let covered = failed.iter().any(|s| s.covers(*o, u));
                    let want = found.contains(u) || (covered && before.contains(u));
                    prop_assert_eq!(set.contains(u), want, "{} after a scan failing {:?}", u, failed);
                }
            }
        }
    }
}
