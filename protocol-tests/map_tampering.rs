//! Someone with write access to the bucket tampers with the fleet's LUN map while
//! nodes read (issue 23): the map is rewritten to move numbers in use, flipped back
//! and forth every second, truncated, deleted and replaced with garbage. Three
//! instances (real moto, libiscsi, raw sessions) keep every number bound to its
//! image: a reader of each LUN on each instance reads byte-exact all along, REPORT
//! LUNS and VPD 0x83 stay identical on all three, and the map object ends up holding
//! the numbers they serve.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use common::fleet::{config, identities, BUCKET, MAP_KEY};
use common::moto::Moto;
use common::raw::{read10, Raw};
use common::{pattern, Server, TARGET};
use s3lun::catalog::shared_map::Numbers;

const IMAGE: usize = 1 << 20;

/// How long the map is flipped (the issue asks for a minute; S3LUN_FLIP_SECS
/// shortens it for a quick local run).
fn flip_secs() -> u64 {
    std::env::var("S3LUN_FLIP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

#[test]
fn a_tampered_map_never_moves_a_number_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    let images: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let data = pattern(IMAGE, 100 + i);
            let key = format!("p{i}/img.squashfs");
            moto.put(d, BUCKET, &key, &data, &[]);
            (format!("s3://{BUCKET}/{key}"), data)
        })
        .collect();
    let servers: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| Server::start_config(&config(d, n, &moto.endpoint, &["p0/", "p1/", "p2/"], "")).0)
        .collect();
    let same = |n: usize| {
        let first = identities(&servers[0]);
        first.len() == n && servers[1..].iter().all(|s| identities(s) == first)
    };
    eventually("three LUNs, the same on all three", 30, || same(3));
    let before = identities(&servers[0]);
    let good = moto.ctl(&["get", BUCKET, MAP_KEY]);
    let numbers = Numbers::parse(good.as_bytes()).expect("a valid map");
    // LUN number -> the bytes it must read, for as long as the test runs.
    let expect: Arc<Vec<(u64, Vec<u8>)>> = Arc::new(
        images
            .iter()
            .map(|(url, data)| (numbers.assigned[url], data.clone()))
            .collect(),
    );

    // One raw session per instance reading every LUN, round after round.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = servers
        .iter()
        .map(|s| {
            let (port, stop, reads, expect) = (s.port, stop.clone(), reads.clone(), expect.clone());
            std::thread::spawn(move || {
                let mut r = Raw::connect(port);
                r.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                r.login_normal(TARGET, &[]);
                let mut block = 0u32;
                let mut failed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (lun, data) in expect.iter() {
                        let (got, st, _) = r.command(*lun, &read10(block, 8), 4096);
                        if st != 0 {
                            // Unit attentions and the like: never a wrong byte.
                            failed += 1;
                            continue;
                        }
                        let at = block as usize * 512;
                        assert!(
                            got[..] == data[at..at + 4096],
                            "LUN {lun} block {block}: another image's bytes"
                        );
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    block = (block + 8) % (IMAGE as u32 / 512);
                }
                failed
            })
        })
        .collect();

    let write = |text: &str| {
        let f = d.join("tampered.json");
        std::fs::write(&f, text).unwrap();
        moto.ctl(&["put", BUCKET, MAP_KEY, f.to_str().unwrap()]);
    };
    // The map with the first two images' numbers swapped: a number in use moved.
    let mut swapped = numbers.clone();
    let (u0, u1) = (&images[0].0, &images[1].0);
    let (n0, n1) = (numbers.assigned[u0], numbers.assigned[u1]);
    swapped.assigned.insert(u0.clone(), n1);
    swapped.assigned.insert(u1.clone(), n0);
    let swapped = serde_json::to_string(&swapped).unwrap();
    let until = Instant::now() + Duration::from_secs(flip_secs());
    let mut flip = false;
    while Instant::now() < until {
        write(if flip { &good } else { &swapped });
        flip = !flip;
        std::thread::sleep(Duration::from_secs(1));
    }
    write(&good[..good.len() / 2]);
    std::thread::sleep(Duration::from_secs(3));
    moto.ctl(&["delete", BUCKET, MAP_KEY]);
    std::thread::sleep(Duration::from_secs(3));
    write("garbage, not a map");
    std::thread::sleep(Duration::from_secs(3));

    // The map ends up holding the numbers in use.
    eventually("the map restored", 30, || {
        moto.try_ctl(&["get", BUCKET, MAP_KEY])
            .and_then(|t| Numbers::parse(t.as_bytes()).ok())
            .is_some_and(|m| {
                images
                    .iter()
                    .zip(expect.iter())
                    .all(|((url, _), (n, _))| m.assigned.get(url) == Some(n))
            })
    });
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let failed = r.join().expect("a reader saw another image's bytes");
        eprintln!("reader: {failed} reads answered with a CHECK CONDITION");
    }
    assert!(reads.load(Ordering::Relaxed) > 100, "the readers read");
    for s in &servers {
        assert_eq!(identities(s), before, "REPORT LUNS and VPD 0x83 unchanged");
    }
}

fn lunmap(cfg: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["lunmap", "--config", cfg.to_str().unwrap()])
        .args(args)
        .output()
        .expect("s3lun lunmap");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "s3lun lunmap {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `s3lun lunmap retire N` is the one way a number leaves its image: refused (and
/// restored in the map) by an instance that serves it, accepted once nobody does,
/// and never given to another image.
#[test]
fn a_number_is_retired_only_by_the_operator_and_never_under_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    for i in 0..2 {
        moto.put(
            d,
            BUCKET,
            &format!("p{i}/img.squashfs"),
            &pattern(70_000, i),
            &[],
        );
    }
    let cfg = config(d, "a", &moto.endpoint, &["p0/", "p1/", "p2/"], "");
    let (srv, _) = Server::start_config(&cfg);
    eventually("two LUNs", 20, || common::report_luns(&srv) == [0, 1]);
    let shown = lunmap(&cfg, &["show"]);
    assert!(
        shown.contains("LUN 1     s3://boot-images/p1/img.squashfs"),
        "{shown}"
    );
    // Retired while served: the instance keeps it and puts it back in the map.
    assert!(lunmap(&cfg, &["retire", "1"]).contains("LUN 1 retired"));
    eventually("the binding restored", 20, || {
        lunmap(&cfg, &["show"]).contains("LUN 1     s3://boot-images/p1/img.squashfs")
    });
    assert_eq!(common::report_luns(&srv), [0, 1]);
    // The image leaves (nobody read it): then the retirement holds, and the next
    // image gets a new number.
    moto.ctl(&["delete", BUCKET, "p1/img.squashfs"]);
    eventually("LUN 1 gone", 20, || common::report_luns(&srv) == [0]);
    lunmap(&cfg, &["retire", "1"]);
    moto.put(d, BUCKET, "p2/img.squashfs", &pattern(70_000, 2), &[]);
    eventually("the next image numbered", 20, || {
        common::report_luns(&srv).len() == 2
    });
    assert_eq!(common::report_luns(&srv), [0, 2], "1 is never given again");
    let shown = lunmap(&cfg, &["show"]);
    assert!(shown.contains("retired: [1]"), "{shown}");
}
