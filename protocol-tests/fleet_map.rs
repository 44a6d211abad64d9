//! One LUN map for the fleet, kept in S3 (real moto): instances that see images in
//! different orders serve identical numbers and identities, writers racing on the map
//! never give one number twice, a rebuilt instance serves the same numbers, one that
//! starts with S3 away serves its last copy and assigns nothing, a server ignoring
//! conditional writes is refused, a damaged map is reported and rebuilt from the
//! numbers held (left alone by an instance that holds none); images
//! that leave the catalog retire only once nobody reads them, a deleted object keeps
//! its cached blocks and answers NOT READY for the rest, and a re-uploaded object is
//! announced with MEDIUM MAY HAVE CHANGED before any of its new bytes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::eventually;
use common::faulty::Proxy;
use common::fleet::{config, identities, BUCKET, MAP_KEY};
use common::moto::{metric, metric_or_zero, Moto};
use common::raw::{read10, sense, Raw};
use common::{pattern, report_luns, Server, TARGET};
use s3lun::catalog::shared_map::{Numbers, SharedMap};
use s3lun::store::s3::{S3Client, S3Settings};

fn map_text(moto: &Moto) -> String {
    moto.ctl(&["get", BUCKET, MAP_KEY])
}

fn client(endpoint: &str) -> S3Client {
    S3Client::new(&S3Settings {
        endpoint: endpoint.into(),
        region: "us-east-1".into(),
        access_key: "test".into(),
        secret_key: "test".into(),
        max_parallel: 16,
        attempts: 2,
        attempt_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(10),
        ca_pem: None,
    })
}

#[test]
fn three_instances_serve_identical_numbers_through_races_rebuilds_and_outages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    // One image per prefix, so each instance meets them in the order it lists them.
    for (i, p) in ["p1", "p2", "p3"].iter().enumerate() {
        moto.put(
            d,
            BUCKET,
            &format!("{p}/img.squashfs"),
            &pattern(70_000, i as u64),
            &[],
        );
    }
    let all = ["p1/", "p2/", "p3/", "p4/", "p5/"];
    let orders: [[&str; 5]; 3] = [
        [all[0], all[1], all[2], all[3], all[4]],
        [all[4], all[2], all[1], all[0], all[3]],
        [all[1], all[3], all[4], all[2], all[0]],
    ];
    // All three start at once on an empty map: they race to create it.
    let starts: Vec<_> = ["a", "b", "c"]
        .iter()
        .zip(orders)
        .map(|(n, o)| {
            let cfg = config(d, n, &moto.endpoint, &o, "");
            std::thread::spawn(move || Server::start_config(&cfg))
        })
        .collect();
    let mut servers: Vec<Server> = starts.into_iter().map(|h| h.join().unwrap().0).collect();
    let same = |servers: &[Server], n: usize| {
        let first = identities(&servers[0]);
        first.len() == n && servers[1..].iter().all(|s| identities(s) == first)
    };
    eventually("three LUNs, the same on all three", 30, || {
        same(&servers, 3)
    });
    // Two new images at the same moment: each instance finds them in its own order.
    for (i, p) in ["p4", "p5"].iter().enumerate() {
        moto.put(
            d,
            BUCKET,
            &format!("{p}/img.squashfs"),
            &pattern(70_000, 10 + i as u64),
            &[],
        );
    }
    eventually("five LUNs, the same on all three", 30, || same(&servers, 5));
    let numbers = Numbers::parse(map_text(&moto).as_bytes()).expect("a valid map");
    assert_eq!(numbers.assigned.len(), 5, "{numbers:?}");
    let before = identities(&servers[0]);

    // Rebuild: instance a loses its disk and comes back with the same numbers.
    servers[0].stop();
    std::fs::remove_dir_all(d.join("a-state")).unwrap();
    std::fs::remove_dir_all(d.join("a-cache")).unwrap();
    let cfg = config(d, "a", &moto.endpoint, &orders[0], "");
    servers[0] = Server::start_config(&cfg).0;
    eventually("the rebuilt instance's LUNs", 20, || {
        identities(&servers[0]) == before
    });

    // S3 away: an instance with b's last copy (through a proxy that is not running)
    // serves exactly those numbers and gives a new local image none.
    servers[1].stop();
    let port = common::free_port();
    std::fs::create_dir_all(d.join("e-state")).unwrap();
    std::fs::copy(d.join("b-state/luns.json"), d.join("e-state/luns.json")).unwrap();
    let (local, _) = common::write_image(d, "local.img", 1 << 20, 99);
    let lun = format!("[[lun]]\npath = \"{}\"\n", local.display());
    let cfg = config(d, "e", &format!("http://127.0.0.1:{port}"), &orders[1], "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}{lun}")).unwrap();
    let (e, mport) = Server::start_config(&cfg);
    assert_eq!(identities(&e), before, "S3 away: the last known numbers");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        report_luns(&e).len(),
        5,
        "no new number without the shared map"
    );
    assert!(metric_or_zero(mport, "s3lun_lunmap_errors_total{kind=\"unreachable\"}") > 0);
    // S3 back: the local image gets the next number, in the shared map.
    let _proxy = Proxy::start_on(port, moto.port);
    eventually("the local image numbered", 30, || {
        report_luns(&e).len() == 6
    });
    let numbers = Numbers::parse(map_text(&moto).as_bytes()).expect("a valid map");
    assert_eq!(numbers.assigned.len(), 6);
    assert!(numbers
        .assigned
        .values()
        .all(|&n| report_luns(&e).contains(&(n as u32))));
}

#[test]
fn writers_racing_on_the_map_never_share_a_number() {
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = client(&moto.endpoint);
    rt.block_on(async {
        for round in 0..50u64 {
            let url = format!("s3://{BUCKET}/race/map-{round}.json");
            let mut tasks = Vec::new();
            for w in 0..8u64 {
                let mut m = SharedMap::new(c.clone(), &url).unwrap();
                m.settle = Duration::from_millis(100);
                // Overlapping sets of identities, each writer in its own order.
                let wanted: Vec<(String, Option<u64>)> = (0..4)
                    .map(|i| (format!("img-{}", (w * 3 + i * 5 + round) % 12), None))
                    .collect();
                tasks.push(tokio::spawn(async move {
                    let got = m.ensure(&wanted).await.expect("ensure");
                    (wanted, got)
                }));
            }
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            let m = SharedMap::new(c.clone(), &url).unwrap();
            let (last, _) = m.read().await.expect("the map parses: no duplicates");
            for (wanted, got) in results {
                for (id, _) in wanted {
                    let n = got.assigned.get(&id).copied();
                    assert!(n.is_some(), "round {round}: {id} unassigned");
                    assert_eq!(last.assigned.get(&id).copied(), n, "round {round}: {id}");
                }
            }
        }
    });
}

#[test]
fn a_server_ignoring_conditional_writes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    let proxy = Proxy::start(moto.port);
    proxy.arm("strip-conditions", 1000);
    let cfg = config(dir.path(), "x", &proxy.endpoint, &["p1/"], "");
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["serve", "--listen", "127.0.0.1:0", "--target-name", TARGET])
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on a server that ignores If-Match"
    );
    assert!(err.contains("ignores conditional writes"), "{err}");
    // The same server with the headers intact is accepted.
    proxy.arm("strip-conditions", 0);
    let (srv, _) = Server::start_config(&cfg);
    assert!(report_luns(&srv).is_empty());
}

/// A server that creates but never updates (every PUT with If-Match fails, the right
/// ETag too: Ceph RGW with a quoted ETag) is found by the probe and named; the
/// instance keeps serving and says why new images get no number.
#[test]
fn a_server_refusing_updates_is_named_and_the_numbers_held_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    moto.put(d, BUCKET, "p1/img.squashfs", &pattern(70_000, 1), &[]);
    let proxy = Proxy::start(moto.port);
    proxy.arm("refuse-if-match", 1_000_000);
    let cfg = config(d, "x", &proxy.endpoint, &["p1/"], "");
    let log = d.join("x.log");
    let (srv, mport) = Server::start_config_logged(&cfg, "warn", &log);
    let label = "s3lun_lunmap_errors_total{kind=\"conditional_writes_refused\"}";
    eventually("the refusal named", 20, || metric_or_zero(mport, label) > 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refuses conditional writes that must succeed"),
        "{text}"
    );
    assert!(srv_alive(&srv), "still serving");
}

fn srv_alive(srv: &Server) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", srv.port)).is_ok()
}

/// A damaged map (garbage, a number twice, a number out of range) is reported; an
/// instance that holds no numbers leaves it alone and serves nothing from it, one that
/// holds numbers rewrites it from them (and numbers a new image): nothing renumbered.
#[test]
fn a_damaged_map_is_reported_and_rebuilt_from_the_numbers_held() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    moto.put(d, BUCKET, "p1/img.squashfs", &pattern(70_000, 1), &[]);
    let garbage = &b"{\"assigned\": {\"s3://x\": 0"[..];
    moto.put(d, BUCKET, MAP_KEY, garbage, &[]);
    let cfg = config(d, "a", &moto.endpoint, &["p1/", "p2/"], "");
    let (srv, mport) = Server::start_config(&cfg);
    let label = |kind: &str| format!("s3lun_lunmap_errors_total{{kind=\"{kind}\"}}");
    eventually("invalid_json", 20, || {
        metric_or_zero(mport, &label("invalid_json")) > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        report_luns(&srv).is_empty(),
        "no numbers from a damaged map"
    );
    assert_eq!(
        map_text(&moto).as_bytes(),
        garbage,
        "left alone: nothing held"
    );
    moto.ctl(&["delete", BUCKET, MAP_KEY]);
    eventually("LUN 0", 20, || report_luns(&srv) == [0]);
    for (i, (damage, kind)) in [
        (garbage, "invalid_json"),
        (
            &b"{\"assigned\": {\"a\": 3, \"b\": 3}}"[..],
            "duplicate_number",
        ),
        (&b"{\"assigned\": {\"a\": 99999}}"[..], "out_of_range"),
    ]
    .into_iter()
    .enumerate()
    {
        let before = metric_or_zero(mport, &label(kind));
        moto.put(d, BUCKET, MAP_KEY, damage, &[]);
        // A new image arrives with the damage: it gets the next number, LUN 0 stays.
        let key = format!("p2/img-{i}.squashfs");
        moto.put(d, BUCKET, &key, &pattern(70_000, 2 + i as u64), &[]);
        eventually(kind, 20, || metric_or_zero(mport, &label(kind)) > before);
        eventually("the new image numbered", 20, || {
            report_luns(&srv).len() == 2
        });
        assert_eq!(report_luns(&srv)[0], 0, "LUN 0 kept");
        let map: Numbers = serde_json::from_str(&map_text(&moto)).expect("rewritten");
        assert_eq!(
            map.assigned.get("s3://boot-images/p1/img.squashfs"),
            Some(&0),
            "the map holds the number in use"
        );
        moto.ctl(&["delete", BUCKET, &key]);
        eventually("the image gone", 20, || report_luns(&srv) == [0]);
    }
}

/// Read `blocks` at `lba` of LUN `lun`: (status, sense key and ASC, data).
fn read(r: &mut Raw, lun: u64, lba: u32, blocks: u16) -> (u8, (u8, u8), Vec<u8>) {
    let (data, st, seg) = r.command(lun, &read10(lba, blocks), u32::from(blocks) * 512);
    let s = if st == 2 { sense(&seg) } else { (0, 0) };
    (st, s, data)
}

#[test]
fn images_leaving_the_catalog_retire_only_when_nobody_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    let img = pattern(1 << 20, 7);
    moto.put(d, BUCKET, "p1/img.squashfs", &img, &[]);
    let cfg = config(d, "a", &moto.endpoint, &["p1/"], "");
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    while read(&mut r, 0, 0, 128).0 != 0 {}
    // The object goes: LBA 0..128 is cached, the rest never was.
    moto.ctl(&["delete", BUCKET, "p1/img.squashfs"]);
    eventually("retiring", 20, || metric(mport, "s3lun_retiring_luns") == 1);
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["catalog", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RETIRING\ts3://boot-images/p1/img.squashfs\tLUN 0"),
        "{text}"
    );
    // Read through twice the retirement window: cached bytes exact, the rest NOT READY.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let (st, _, data) = read(&mut r, 0, 0, 128);
        assert_eq!(st, 0);
        assert_eq!(data, img[..128 * 512]);
        let (st, s, _) = read(&mut r, 0, 1024, 8);
        assert_eq!(
            (st, s),
            (2, (0x02, 0x3a)),
            "an uncached block of a deleted object"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(report_luns(&srv), [0]);
    // Nobody reads: the LUN goes, and the session hears the inventory changed.
    eventually("retired", 20, || report_luns(&srv).is_empty());
    assert_eq!(metric(mport, "s3lun_retiring_luns"), 0);
    let (st, s, _) = read(&mut r, 0, 0, 1);
    assert_eq!((st, s), (2, (0x06, 0x3f)), "REPORTED LUNS DATA HAS CHANGED");
    let (st, s, _) = read(&mut r, 0, 0, 1);
    assert_eq!((st, s), (2, (0x05, 0x25)), "LOGICAL UNIT NOT SUPPORTED");
}

#[test]
fn a_reuploaded_object_is_announced_before_its_new_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    let (v1, v2) = (pattern(1 << 20, 1), pattern(1 << 20, 2));
    moto.put(d, BUCKET, "p1/img.squashfs", &v1, &[]);
    let cfg = config(d, "a", &moto.endpoint, &["p1/"], "");
    let log = d.join("s3lun.log");
    let srv = Server::start_logged(&["--config", cfg.to_str().unwrap()], "info", &log);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    while read(&mut r, 0, 0, 8).0 != 0 {}
    moto.put(d, BUCKET, "p1/img.squashfs", &v2, &[]);
    // Read everywhere until the new content shows: every answer is all of v1, all
    // of v2, a NOT READY while the old version is refused, or the one attention.
    let (mut attention, mut new) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0u32;
    while !new || !i.is_multiple_of(16) {
        assert!(Instant::now() < deadline, "no new content");
        let lba = (i * 97) % 2040;
        i += 1;
        let (st, s, data) = read(&mut r, 0, lba, 8);
        let range = lba as usize * 512..(lba as usize + 8) * 512;
        match (st, s) {
            (0, _) if data == v2[range.clone()] => {
                assert!(attention, "new bytes before MEDIUM MAY HAVE CHANGED");
                new = true;
            }
            (0, _) => {
                assert_eq!(data, v1[range], "neither version at LBA {lba}");
                assert!(!new, "old bytes after new ones at LBA {lba}");
            }
            (2, (0x06, 0x28)) => {
                assert!(!attention, "a second attention");
                attention = true;
            }
            (2, (0x02, 0x04)) => assert!(!attention, "NOT READY after the switch"),
            other => panic!("unexpected {other:?} at LBA {lba}"),
        }
    }
    // A new session reads the new bytes.
    let mut n = Raw::connect(srv.port);
    n.login_normal(TARGET, &[]);
    while read(&mut n, 0, 0, 8).0 != 0 {}
    assert_eq!(read(&mut n, 0, 100, 8).2, v2[100 * 512..108 * 512]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("content changed under the same identity")
                && l.contains("old=")
                && l.contains("new=")),
        "{text}"
    );
}

#[test]
fn an_untagged_image_keeps_serving_every_byte_until_it_retires() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", BUCKET]);
    let img = pattern(1 << 20, 11);
    let etag = moto.put(d, BUCKET, "img1/rootfs.squashfs", &img, &[]);
    let manifest = format!(
        "{{\"artifacts\": [{{\"type\": \"application/vnd.cray.image.rootfs.squashfs\", \
         \"link\": {{\"path\": \"s3://{BUCKET}/img1/rootfs.squashfs\", \"etag\": \"{etag}\"}}}}]}}"
    );
    moto.put(d, BUCKET, "img1/manifest.json", manifest.as_bytes(), &[]);
    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n\
             [cache]\ndir = \"{}\"\nchunk_size = 65536\nreadahead_chunks = 0\n\
             [catalog]\nmanifest_buckets = [\"{BUCKET}\"]\nrefresh_secs = 1\nretire_after_secs = 4\n\
             [lunmap]\ns3 = \"s3://{BUCKET}/{MAP_KEY}\"\n",
            moto.endpoint,
            d.join("cache").display()
        ),
    )
    .unwrap();
    let (srv, mport) = Server::start_config(&cfg);
    eventually("LUN 0", 20, || report_luns(&srv) == [0]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    while read(&mut r, 0, 0, 8).0 != 0 {}
    // Untagged: the manifest goes, the object stays. Every byte is still served.
    moto.ctl(&["delete", BUCKET, "img1/manifest.json"]);
    eventually("retiring", 20, || metric(mport, "s3lun_retiring_luns") == 1);
    let until = Instant::now() + Duration::from_secs(8);
    let mut lba = 0u32;
    while Instant::now() < until {
        let (st, _, data) = read(&mut r, 0, lba, 16);
        assert_eq!(st, 0, "LBA {lba}");
        let at = lba as usize * 512;
        assert_eq!(data, img[at..at + 16 * 512], "LBA {lba}");
        lba = (lba + 97) % 2032;
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually("retired", 20, || report_luns(&srv).is_empty());
    let (st, s, _) = read(&mut r, 0, 0, 1);
    assert_eq!((st, s), (2, (0x06, 0x3f)), "REPORTED LUNS DATA HAS CHANGED");
}
