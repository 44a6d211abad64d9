//! The image catalog against a real S3 server (moto): every manifest shape from the
//! fixtures, a PE prefix, bad cases skipped with their reason, the right LUNs with
//! the right WWIDs, `s3lun catalog` output, and live add/remove seen by a session.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::{metric, Moto};
use common::raw::{sense, Raw};
use common::{free_port, pattern, report_luns, run, Server, TARGET};
use s3lun::scsi::Identity;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/protocol-tests/fixtures/manifests"
);

fn md5_hex(d: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(d))
}

fn put(moto: &Moto, dir: &Path, key: &str, data: &[u8], flags: &[&str]) -> String {
    moto.put(dir, "boot-images", key, data, flags)
}

/// A fixture manifest with its rootfs link moved to `path` and fields overridden.
fn manifest(fixture: &str, path: &str, etag: Option<Option<&str>>, md5: Option<&str>) -> Vec<u8> {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(fixture)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for a in v["artifacts"].as_array_mut().unwrap() {
        if a["type"] == "application/vnd.cray.image.rootfs.squashfs" {
            a["link"]["path"] = serde_json::Value::from(path);
            if let Some(e) = etag {
                a["link"]["etag"] = e.map_or(serde_json::Value::Null, serde_json::Value::from);
            }
            if let Some(m) = md5 {
                a["md5"] = serde_json::Value::from(m);
            }
        }
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

struct Image {
    id: &'static str,
    identity: String,
}

fn serial_of(srv: &Server, lun: u32) -> String {
    let out = run("iscsi-inq", &["-e", "1", "-c", "128", &srv.url(lun)]);
    out.trim()
        .strip_prefix("Unit Serial Number:[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

#[test]
fn catalog_projects_every_fixture_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let mut served = Vec::new();

    // with-etag.json: the etag matches the object.
    let data = pattern(CHUNK + 11, 1);
    let path = "s3://boot-images/img-with-etag/compute.squashfs";
    let etag = put(
        &moto,
        d,
        "img-with-etag/compute.squashfs",
        &data,
        &["--multipart"],
    );
    put(
        &moto,
        d,
        "img-with-etag/manifest.json",
        &manifest(
            "with-etag.json",
            path,
            Some(Some(&etag)),
            Some(&md5_hex(&data)),
        ),
        &[],
    );
    served.push(Image {
        id: "img-with-etag",
        identity: format!("{path}|{etag}"),
    });
    // missing-etag.json and null-etag.json (the seed incident): md5 and md5sum metadata.
    for (id, fixture) in [
        ("img-missing-etag", "missing-etag.json"),
        ("img-null-etag", "null-etag.json"),
    ] {
        let data = pattern(CHUNK + 12, id.len() as u64);
        let path = format!("s3://boot-images/{id}/compute.squashfs");
        put(
            &moto,
            d,
            &format!("{id}/compute.squashfs"),
            &data,
            &["--md5-metadata"],
        );
        put(
            &moto,
            d,
            &format!("{id}/manifest.json"),
            &manifest(fixture, &path, None, Some(&md5_hex(&data))),
            &[],
        );
        served.push(Image {
            id,
            identity: format!("{path}|"),
        });
    }
    // no-etag-no-md5.json: HEAD's ETag.
    let data = pattern(CHUNK + 13, 3);
    let path = "s3://boot-images/img-no-etag-no-md5/rootfs";
    put(&moto, d, "img-no-etag-no-md5/rootfs", &data, &[]);
    put(
        &moto,
        d,
        "img-no-etag-no-md5/manifest.json",
        &manifest("no-etag-no-md5.json", path, None, None),
        &[],
    );
    served.push(Image {
        id: "img-no-etag-no-md5",
        identity: format!("{path}|"),
    });
    // A manifest etag that is not the object's: skipped, as the old agent did (the
    // object is not the image the manifest describes).
    let data = pattern(CHUNK + 14, 4);
    let path = "s3://boot-images/img-stale/compute.squashfs";
    put(&moto, d, "img-stale/compute.squashfs", &data, &[]);
    put(
        &moto,
        d,
        "img-stale/manifest.json",
        &manifest("with-etag.json", path, None, None),
        &[],
    );
    // Skipped: no rootfs, truncated JSON, a missing object, a duplicate image.
    put(
        &moto,
        d,
        "img-no-rootfs/manifest.json",
        &std::fs::read(Path::new(FIXTURES).join("no-rootfs.json")).unwrap(),
        &[],
    );
    put(
        &moto,
        d,
        "img-truncated/manifest.json",
        &std::fs::read(Path::new(FIXTURES).join("truncated.json")).unwrap(),
        &[],
    );
    put(
        &moto,
        d,
        "img-missing-object/manifest.json",
        &manifest(
            "with-etag.json",
            "s3://boot-images/img-missing-object/nothing",
            Some(None),
            None,
        ),
        &[],
    );
    put(
        &moto,
        d,
        "img-z-duplicate/manifest.json",
        &manifest(
            "with-etag.json",
            "s3://boot-images/img-with-etag/compute.squashfs",
            Some(Some(&etag)),
            None,
        ),
        &[],
    );
    // A manifest saved with a UTF-8 byte-order mark: served (the old agent read it).
    let data = pattern(CHUNK + 3, 6);
    let path = "s3://boot-images/img-bom/compute.squashfs";
    let bom_etag = put(&moto, d, "img-bom/compute.squashfs", &data, &[]);
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(manifest(
        "with-etag.json",
        path,
        Some(Some(&bom_etag)),
        None,
    ));
    put(&moto, d, "img-bom/manifest.json", &bom, &[]);
    served.push(Image {
        id: "img-bom",
        identity: format!("{path}|{bom_etag}"),
    });
    // A manifest over 1 MiB: skipped as too large, not as S3 trouble.
    let mut huge = manifest("with-etag.json", path, Some(Some(&bom_etag)), None);
    huge.extend(std::iter::repeat_n(b' ', 1 << 20));
    put(&moto, d, "img-huge/manifest.json", &huge, &[]);
    // A PE image: the DESIGN.md example identity.
    put(
        &moto,
        d,
        "PE/CPE-base.x86_64-24.11.squashfs",
        &pattern(CHUNK + 15, 5),
        &[],
    );
    served.push(Image {
        id: "CPE-base.x86_64-24.11.squashfs",
        identity: "s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs".into(),
    });

    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_file = \"{}\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[cache]\ndir = \"{}\"\n[catalog]\nmanifest_buckets = [\"boot-images\"]\nprefixes = [\"s3://boot-images/PE/\"]\nrefresh_secs = 1\n",
            d.join("luns.json").display(),
            moto.endpoint,
            d.join("cache").display()
        ),
    )
    .unwrap();

    // The operator's view, before anything runs.
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["catalog", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    for img in &served {
        let wwid = Identity::lio(&img.identity).wwid();
        assert!(
            text.lines()
                .any(|l| l.starts_with(img.id) && l.contains(&wwid)),
            "{} / {wwid} missing:\n{text}",
            img.id
        );
    }
    for (img, kind) in [
        ("img-no-rootfs", "no_rootfs"),
        ("img-truncated", "invalid_json"),
        ("img-missing-object", "missing_object"),
        ("img-z-duplicate", "duplicate"),
        ("img-stale", "etag_mismatch"),
        ("img-huge", "manifest_too_large"),
    ] {
        assert!(
            text.lines()
                .any(|l| l == format!("SKIPPED\t{img}\t{kind}").as_str()
                    || l.starts_with(&format!("SKIPPED\t{img}\t{kind}\t"))),
            "{img} {kind}:\n{text}"
        );
    }
    for (img, kind) in [
        ("img-missing-etag", "missing_etag"),
        ("img-null-etag", "missing_etag"),
        ("img-no-etag-no-md5", "missing_md5"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("WARNING\t{img}\t{kind}\t"))),
            "{img} {kind}:\n{text}"
        );
    }
    assert!(
        text.contains("(Md5)") && text.contains("(HeadEtag)") && text.contains("(ManifestEtag)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} images served, 6 skipped", served.len())),
        "{text}"
    );

    let (mut srv, mport) = Server::start_config(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(mport, "s3lun_luns") != served.len() as u64 {
        assert!(Instant::now() < deadline, "the first scan never completed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let numbers = report_luns(&srv);
    assert_eq!(numbers.len(), served.len(), "{numbers:?}");
    let mut serials = std::collections::HashMap::new();
    for n in &numbers {
        serials.insert(serial_of(&srv, *n), *n);
    }
    for img in &served {
        let want = Identity::lio(&img.identity).serial;
        assert!(
            serials.contains_key(&want),
            "{} (serial {want}) is not served",
            img.id
        );
    }
    // The PE example of DESIGN.md, as multipath would see it.
    let pe = serials[&Identity::lio("s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs").serial];
    let ident = run("iscsi-inq", &["-e", "1", "-c", "131", &srv.url(pe)]);
    assert!(ident.contains("Designator Type:(3) NAA"), "{ident}");
    assert!(
        Identity::lio("s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs").wwid()
            == "36001405de4cc04e7dacfb9ada0a6b4cc"
    );
    assert!(metric(mport, "s3lun_catalog_skipped_images") == 6);

    // Live: a session holds LUNs while one image goes and another comes.
    let keep = serials[&Identity::lio(&served[0].identity).serial];
    let gone = serials[&Identity::lio(&served[3].identity).serial];
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let _ = r.command(keep as u64, &[0x00], 0);
    moto.ctl(&["delete", "boot-images", "img-no-etag-no-md5/manifest.json"]);
    let data = pattern(CHUNK + 16, 6);
    let path = "s3://boot-images/img-new/compute.squashfs";
    put(&moto, d, "img-new/compute.squashfs", &data, &[]);
    put(
        &moto,
        d,
        "img-new/manifest.json",
        &manifest("no-etag-no-md5.json", path, None, None),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = report_luns(&srv);
        if !now.contains(&gone) && now.len() == served.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change never showed: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, st, s) = r.command(keep as u64, &[0x00], 0);
    assert_eq!(
        (st, sense(&s)),
        (2, (6, 0x3f)),
        "REPORTED LUNS DATA HAS CHANGED"
    );
    let (d0, st, _) = r.command(keep as u64, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096);
    assert_eq!(st, 0);
    assert!(
        d0[..] == pattern(CHUNK + 11, 1)[..4096],
        "the kept LUN still serves its image"
    );
    let now = report_luns(&srv);
    assert!(!now.contains(&gone), "removed image still served");
    assert!(
        now.iter().all(|n| *n != gone),
        "LUN number {gone} not reused"
    );
    assert!(srv.alive(), "s3lun must never exit over bad manifests");
}

const CHUNK: usize = 1 << 20;

/// Kills the helper process on drop.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ims_endpoint_projects_only_tagged_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "ims-images"]);
    let put_in = |bucket: &str, key: &str, data: &[u8]| moto.put(d, bucket, key, data, &[]);
    let mut images = Vec::new();
    for (id, tag) in [
        ("aaaa", serde_json::json!("true")),
        ("bbbb", serde_json::json!(false)),
        ("cccc", serde_json::Value::Null),
    ] {
        let data = pattern(CHUNK + 3, id.len() as u64 + 50);
        let path = format!("s3://ims-images/{id}/rootfs");
        let etag = put_in("ims-images", &format!("{id}/rootfs"), &data);
        put_in(
            "ims-images",
            &format!("{id}/manifest.json"),
            &manifest("with-etag.json", &path, Some(Some(&etag)), None),
        );
        let mut meta = serde_json::Map::new();
        if !tag.is_null() {
            meta.insert("sbps-project".into(), tag);
        }
        images.push(serde_json::json!({
            "id": id,
            "link": {"path": format!("s3://ims-images/{id}/manifest.json"), "type": "s3"},
            "metadata": meta,
        }));
        if id == "aaaa" {
            images.push(serde_json::json!({"id": "tagged-by-tags", "link": null, "tags": {"sbps-project": true}}));
        }
    }
    let list = d.join("images.json");
    std::fs::write(&list, serde_json::to_vec(&images).unwrap()).unwrap();
    let token = d.join("token");
    std::fs::write(&token, "sekrit-token\n").unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/s3/fake_ims.py");
    let ims = Child(
        Command::new("python3")
            .args([
                script.to_str().unwrap(),
                &port.to_string(),
                "sekrit-token",
                list.to_str().unwrap(),
            ])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "fake IMS did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = d.join("s3lun.toml");
    let write_cfg = |token_file: &Path| {
        std::fs::write(
            &cfg,
            format!(
                "state_file = \"{}\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[cache]\ndir = \"{}\"\n[catalog]\nims_url = \"http://127.0.0.1:{port}/v3/images\"\nims_token_file = \"{}\"\nrefresh_secs = 1\n",
                d.join("luns.json").display(),
                moto.endpoint,
                d.join("cache").display(),
                token_file.display()
            ),
        )
        .unwrap();
    };
    write_cfg(&token);
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["catalog", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.lines().any(|l| l.starts_with("aaaa\tims\t")), "{text}");
    assert!(
        !text.contains("bbbb") && !text.contains("cccc"),
        "untagged images projected:\n{text}"
    );
    assert!(text.contains("1 images served, 0 skipped"), "{text}");
    // The same for scripts.
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args([
            "catalog",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(j["images"][0]["origin"], "ims", "{j}");
    assert_eq!(j["images"][0]["image"], "aaaa", "{j}");
    assert_eq!(
        (j["served"].as_u64(), j["skipped"].as_u64()),
        (Some(1), Some(0))
    );
    // A wrong token: IMS refuses, the catalog says so and serves nothing new.
    let bad = d.join("bad-token");
    std::fs::write(&bad, "nope").unwrap();
    write_cfg(&bad);
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["catalog", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("UNREADABLE\tims") && text.contains("0 images served"),
        "{text}"
    );
    // And the target serves the tagged image.
    write_cfg(&token);
    let (srv, mport) = Server::start_config(&cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(mport, "s3lun_luns") != 1 {
        assert!(
            Instant::now() < deadline,
            "the IMS image never became a LUN"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(report_luns(&srv), vec![0]);
    drop(srv);
    // IMS down at a restart: its image keeps its number and its origin.
    drop(ims);
    let (srv, mport) = Server::start_config(&cfg);
    assert_eq!(report_luns(&srv), vec![0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(mport, "s3lun_catalog_last_scan_failed") != 1 {
        assert!(Instant::now() < deadline, "no scan failed without IMS");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(report_luns(&srv), vec![0], "a failed IMS keeps its images");
    assert_eq!(
        metric(mport, "s3lun_catalog_images"),
        1,
        "the gauge keeps the last good catalog"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("luns.json")).unwrap()).unwrap();
    assert_eq!(state["format"], 2);
    assert_eq!(state["known"][0]["origin"], "ims", "{state}");
}

#[test]
fn a_restart_serves_the_known_images_even_with_s3_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    for (i, id) in ["img-1", "img-2"].iter().enumerate() {
        let data = pattern(CHUNK + 5, 60 + i as u64);
        let path = format!("s3://boot-images/{id}/rootfs");
        put(&moto, d, &format!("{id}/rootfs"), &data, &[]);
        put(
            &moto,
            d,
            &format!("{id}/manifest.json"),
            &manifest("no-etag-no-md5.json", &path, None, None),
            &[],
        );
    }
    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_file = \"{}\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\nattempts = 1\ndeadline_secs = 2\n[cache]\ndir = \"{}\"\n[catalog]\nmanifest_buckets = [\"boot-images\"]\n",
            d.join("luns.json").display(),
            moto.endpoint,
            d.join("cache").display()
        ),
    )
    .unwrap();
    let before = {
        let (srv, mport) = Server::start_config(&cfg);
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(mport, "s3lun_luns") != 2 {
            assert!(Instant::now() < deadline, "first scan");
            std::thread::sleep(Duration::from_millis(100));
        }
        report_luns(&srv)
    };
    // `warm` fills the cache for catalog images, under the namespaces the target
    // reads them by: with S3 gone, their every byte is still served.
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["warm", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in ["img-1", "img-2"] {
        assert!(
            text.contains(&format!("warmed s3://boot-images/{id}/rootfs")),
            "{text}"
        );
    }
    moto.stop();
    // S3 is gone: the scan fails, yet the known images are LUNs from the first moment.
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(report_luns(&srv), before);
    let mut r = common::raw::Raw::session(srv.port);
    for (lun, seed) in [(0u64, 60u64), (1, 61)] {
        let data = pattern(CHUNK + 5, seed);
        let blocks = (CHUNK / 512) as u16;
        let mut got = None;
        for _ in 0..3 {
            let (d, st, _) = r.command(lun, &common::raw::read10(0, blocks), CHUNK as u32);
            if st == 0 {
                got = Some(d);
                break;
            }
        }
        assert!(
            got.as_deref() == Some(&data[..CHUNK]),
            "LUN {lun}: warmed bytes served without S3"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        report_luns(&srv),
        before,
        "a failed scan must not empty the LUN set"
    );
}

/// Scans cost what changed: after the first, an unchanged catalog is listed and
/// nothing else (no manifest GET, no HEAD); one changed image costs its manifest's
/// GET; and the catalog served is the same.
#[test]
fn rescans_cost_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let image = |i: usize, seed: u64| {
        let data = pattern(4096 + i, seed);
        let path = format!("s3://boot-images/img{i:02}/rootfs");
        let etag = put(&moto, d, &format!("img{i:02}/rootfs"), &data, &[]);
        put(
            &moto,
            d,
            &format!("img{i:02}/manifest.json"),
            &manifest("with-etag.json", &path, Some(Some(&etag)), None),
            &[],
        );
    };
    for i in 0..20 {
        image(i, i as u64);
    }
    for i in 0..5 {
        put(
            &moto,
            d,
            &format!("PE/pe{i}.squashfs"),
            &pattern(4096, 90 + i),
            &[],
        );
    }
    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[cache]\ndir = \"{}\"\n[catalog]\nmanifest_buckets = [\"boot-images\"]\nprefixes = [\"s3://boot-images/PE/\"]\nrefresh_secs = 1\n",
            moto.endpoint,
            d.join("cache").display()
        ),
    )
    .unwrap();
    let (srv, mport) = Server::start_config(&cfg);
    let counts = || {
        (
            metric(mport, "s3lun_catalog_scans_total"),
            metric(mport, "s3lun_s3_gets_total"),
            metric(mport, "s3lun_s3_heads_total"),
            metric(mport, "s3lun_s3_lists_total"),
        )
    };
    let wait_scans = |n: u64| {
        let start = counts().0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while counts().0 < start + n {
            assert!(Instant::now() < deadline, "scans stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(mport, "s3lun_luns") != 25 {
        assert!(Instant::now() < deadline, "the first scan never completed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let luns = report_luns(&srv);
    // Let the first scan's effects settle, then count whole scans.
    wait_scans(1);
    let (s0, g0, h0, l0) = counts();
    wait_scans(3);
    let (s1, g1, h1, l1) = counts();
    assert!(s1 >= s0 + 3);
    assert_eq!(
        (g1 - g0, h1 - h0),
        (0, 0),
        "an unchanged rescan made GETs or HEADs"
    );
    assert!(
        l1 - l0 >= 2 * (s1 - s0),
        "each scan lists the bucket and the prefix"
    );
    assert_eq!(report_luns(&srv), luns);

    // One image rebuilt in place: its manifest is read again, one GET; no HEAD, as
    // the listing has the new rootfs' size and ETag.
    image(7, 777);
    wait_scans(3);
    let (_, g2, h2, _) = counts();
    assert_eq!((g2 - g1, h2 - h1), (1, 0), "one manifest GET, no HEAD");
    assert_eq!(report_luns(&srv).len(), 25);
}
