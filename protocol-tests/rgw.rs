//! The S3 that sites run: a single-node Ceph RGW from Debian's packages
//! (`scripts/rgw`), with the semantics s3lun depends on exercised through s3lun
//! itself: guarded ranged GETs answered 206 with their Content-Range, multipart
//! ETags, `md5sum` metadata, and the fleet's shared LUN map, whose conditional
//! updates RGW only accepts with an unquoted `If-Match` (a quoted one is always a
//! 412 there): images added after the map exists get numbers, the same on three
//! instances, and a deleted map is re-created with the numbers they serve.

mod common;

use std::time::Duration;

use common::eventually;
use common::fleet::{config as fleet_config, identities, BUCKET, MAP_KEY};
use common::moto::{metric_or_zero, Moto};
use common::rgw::Rgw;
use common::{pattern, Server};

#[test]
fn s3lun_on_ceph_rgw_reads_exact_bytes_and_keeps_the_fleet_map() {
    let rgw = Rgw::start();
    let s3 = Moto::attach(&rgw.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    s3.ctl(&["mkbucket", BUCKET]);

    // Guarded ranged GETs of a multipart object with md5sum metadata: 206 with the
    // range asked, under the ETag HEAD gave (md5-of-parts-N), nothing refused.
    let data = pattern(12 << 20, 7);
    let etag = s3.put(
        d,
        BUCKET,
        "PE/multi.squashfs",
        &data,
        &["--multipart", "--md5-metadata"],
    );
    assert!(etag.ends_with("-3"), "a multipart ETag: {etag}");
    let cfg = d.join("static.toml");
    std::fs::write(
        &cfg,
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n\
             [cache]\ndir = \"{}\"\nchunk_size = 1048576\n\
             [[lun]]\ns3 = \"s3://{BUCKET}/PE/multi.squashfs\"\n",
            rgw.endpoint,
            d.join("static-cache").display()
        ),
    )
    .unwrap();
    let (srv, mport) = Server::start_config(&cfg);
    let out = d.join("multi.raw");
    assert!(common::convert(&srv.url(0), &out), "qemu-img convert");
    common::check_image(&out, &data);
    let (_, metrics) = common::http_get(mport, "/metrics");
    assert!(
        !metrics.contains("s3lun_s3_bad_answers_total{"),
        "a conforming server's answers were refused:\n{metrics}"
    );
    drop(srv);

    // The fleet map: created by the first scans, then updated for an image added
    // after it exists (every update is a conditional PUT).
    for p in ["p1", "p2"] {
        s3.put(
            d,
            BUCKET,
            &format!("{p}/img.squashfs"),
            &pattern(70_000, 1),
            &[],
        );
    }
    let orders = [
        ["p1/", "p2/", "p3/"],
        ["p3/", "p2/", "p1/"],
        ["p2/", "p3/", "p1/"],
    ];
    let mut servers: Vec<(Server, u16)> = ["a", "b", "c"]
        .iter()
        .zip(orders)
        .map(|(n, o)| Server::start_config(&fleet_config(d, n, &rgw.endpoint, &o, "")))
        .collect();
    let same = |n: usize| {
        let first = identities(&servers[0].0);
        first.len() == n && servers[1..].iter().all(|(s, _)| identities(s) == first)
    };
    eventually("two LUNs, the same on all three", 40, || same(2));
    s3.put(d, BUCKET, "p3/img.squashfs", &pattern(70_000, 3), &[]);
    eventually(
        "the image added after the map exists numbered on all three",
        40,
        || same(3),
    );
    let before = identities(&servers[0].0);
    let refused: u64 = servers
        .iter()
        .map(|(_, m)| {
            metric_or_zero(
                *m,
                "s3lun_lunmap_errors_total{kind=\"conditional_writes_refused\"}",
            )
        })
        .sum();
    assert_eq!(refused, 0, "the probe found conditional writes refused");

    // Rebuild: instance a loses its disk and comes back with the same numbers.
    let (mut a, _) = servers.remove(0);
    a.stop();
    std::fs::remove_dir_all(d.join("a-state")).unwrap();
    std::fs::remove_dir_all(d.join("a-cache")).unwrap();
    servers.insert(
        0,
        Server::start_config(&fleet_config(d, "a", &rgw.endpoint, &orders[0], "")),
    );
    eventually("the rebuilt instance's LUNs", 40, || {
        identities(&servers[0].0) == before
    });

    // Content change under the same key: the same number, the new bytes, everywhere.
    let lun3 = before
        .iter()
        .map(|(l, _)| *l)
        .find(|&l| {
            let out = d.join("probe.raw");
            common::convert(&servers[0].0.url(l), &out)
                && std::fs::read(&out).is_ok_and(|b| b[..70_000] == pattern(70_000, 3)[..])
        })
        .expect("the LUN of p3");
    let new = pattern(70_000, 33);
    s3.put(d, BUCKET, "p3/img.squashfs", &new, &[]);
    for (srv, _) in &servers {
        let out = d.join("changed.raw");
        eventually("the new content served", 40, || {
            common::convert(&srv.url(lun3), &out)
                && std::fs::read(&out).is_ok_and(|b| b[..70_000] == new[..])
        });
    }
    assert_eq!(
        identities(&servers[1].0),
        before,
        "same numbers after the change"
    );

    // A deleted map is re-created from what the instances hold: nothing renumbered.
    s3.ctl(&["delete", BUCKET, MAP_KEY]);
    eventually("the map re-created", 40, || {
        s3.try_ctl(&["get", BUCKET, MAP_KEY])
            .is_some_and(|m| m.matches(": ").count() >= 3)
    });
    std::thread::sleep(Duration::from_secs(2));
    for (s, _) in &servers {
        assert_eq!(
            identities(s),
            before,
            "numbers moved after the map was deleted"
        );
    }
}
