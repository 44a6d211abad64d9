//! S3-backed LUNs against a real S3 server (moto over HTTP on 127.0.0.1): byte-exact
//! reads cold and warm, one GET per chunk under concurrency, content keys for images
//! without a usable etag, staleness when an object is replaced, S3 outages, and a
//! kill -9 in the middle of a cache fill.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::moto::{metric, Moto};
use common::raw::{sense, Raw};
use common::{cache_op, pattern, Server, TARGET};

const CHUNK: usize = 1 << 20;

struct Lun<'a> {
    url: &'a str,
    etag: Option<&'a str>,
    md5: Option<&'a str>,
}

/// A config serving `luns` from moto; `cache_extra` goes into the `[cache]` section.
fn write_config(dir: &Path, endpoint: &str, luns: &[Lun], cache_extra: &str) -> PathBuf {
    let mut t = format!(
        "[s3]\nendpoint = \"{endpoint}\"\naccess_key = \"test\"\nsecret_key = \"test\"\nattempts = 2\nattempt_timeout_secs = 2\ndeadline_secs = 4\n[cache]\ndir = \"{}\"\nchunk_size = {CHUNK}\nmemory_bytes = 8388608\n{cache_extra}",
        dir.join("cache").display()
    );
    for l in luns {
        t.push_str(&format!("[[lun]]\ns3 = \"{}\"\n", l.url));
        if let Some(e) = l.etag {
            t.push_str(&format!("etag = \"{e}\"\n"));
        }
        if let Some(m) = l.md5 {
            t.push_str(&format!("md5 = \"{m}\"\n"));
        }
    }
    let p = dir.join("s3lun.toml");
    std::fs::write(&p, t).unwrap();
    p
}

/// One object of the bucket and the config serving it as LUN 0 with no manifest etag
/// or md5 (the ETag from HEAD names it).
struct OneImage {
    cfg: PathBuf,
    data: Vec<u8>,
    /// The ETag the upload gave.
    etag: String,
    moto: Moto,
    dir: tempfile::TempDir,
}

/// moto with `len` pattern bytes uploaded as `boot-images/<key>` (`flags` to s3ctl put).
fn one_image(key: &str, len: usize, seed: u64, flags: &[&str], cache_extra: &str) -> OneImage {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(len, seed);
    let etag = upload(&moto, dir.path(), key, &data, flags);
    let url = format!("s3://boot-images/{key}");
    let cfg = write_config(
        dir.path(),
        &moto.endpoint,
        &[Lun {
            url: &url,
            etag: None,
            md5: None,
        }],
        cache_extra,
    );
    OneImage {
        cfg,
        data,
        etag,
        moto,
        dir,
    }
}

fn upload(moto: &Moto, dir: &Path, key: &str, data: &[u8], flags: &[&str]) -> String {
    moto.put(dir, "boot-images", key, data, flags)
}

fn convert(srv: &Server, lun: u32, out: &Path) -> bool {
    common::convert(&srv.url(lun), out)
}

fn check(out: &Path, image: &[u8]) {
    common::check_image(out, image)
}

fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

#[test]
fn cold_and_warm_reads_are_byte_exact_and_warm_reads_issue_no_get() {
    let OneImage {
        cfg,
        data,
        etag,
        moto: _moto,
        dir,
    } = one_image(
        "PE/big.squashfs",
        11 * CHUNK + 1234,
        31,
        &["--multipart"],
        "",
    );
    assert!(
        etag.contains('-'),
        "multipart upload gives a -N ETag: {etag}"
    );
    let out = dir.path().join("out.raw");
    {
        let (mut srv, m) = Server::start_config(&cfg);
        assert!(convert(&srv, 0, &out));
        check(&out, &data);
        let gets = metric(m, "s3lun_s3_gets_total");
        // Reads of several chunks are one GET each, and read-ahead batches more once
        // the reader proved sequential: fewer GETs than the 12 chunks.
        assert!(
            (1..=9).contains(&gets),
            "a sequential cold read is windowed GETs, not one per chunk: {gets}"
        );
        assert_eq!(
            metric(m, "s3lun_s3_bytes_total"),
            data.len() as u64,
            "every byte fetched once"
        );
        assert_eq!(metric(m, "s3lun_cache_misses_total"), 12, "12 chunks");
        assert!(convert(&srv, 0, &out));
        check(&out, &data);
        assert_eq!(
            metric(m, "s3lun_s3_gets_total"),
            gets,
            "the warm read issued a GET"
        );
        srv.stop();
    }
    // A restart reuses the persistent cache: the content key, not the process, names it.
    let (srv, m) = Server::start_config(&cfg);
    assert!(convert(&srv, 0, &out));
    check(&out, &data);
    assert_eq!(metric(m, "s3lun_s3_gets_total"), 0);
    // Every chunk came from disk at least once (the 8 MiB memory tier may evict
    // and reread one).
    assert!(metric(m, "s3lun_cache_disk_hits_total") >= 12);
    let v = cache_op(&cfg, "verify");
    assert!(v.contains("12 good chunks, 0 bad"), "{v:?}");
}

#[test]
fn sixteen_cold_readers_fetch_each_chunk_once() {
    let OneImage {
        cfg,
        data,
        etag: _etag,
        moto: _moto,
        dir,
    } = one_image(
        "PE/storm.squashfs",
        24 * CHUNK + 77,
        32,
        &["--multipart"],
        "",
    );
    let (srv, m) = Server::start_config(&cfg);
    let readers: Vec<_> = (0..16)
        .map(|i| {
            let url = srv.url(0);
            let out = dir.path().join(format!("r{i}.raw"));
            std::thread::spawn(move || {
                let ok = common::convert(&url, &out);
                (ok, out)
            })
        })
        .collect();
    for r in readers {
        let (ok, out) = r.join().unwrap();
        assert!(ok);
        check(&out, &data);
    }
    let fetched = metric(m, "s3lun_s3_bytes_total") as f64;
    let ratio = fetched / data.len() as f64;
    eprintln!("16 cold readers: S3 bytes fetched / image size = {ratio:.3}");
    assert!(
        ratio <= 1.05,
        "fetched {fetched} bytes for a {}-byte image",
        data.len()
    );
}

#[test]
fn images_without_a_usable_etag_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let a = pattern(3 * CHUNK + 5, 33);
    let b = pattern(2 * CHUNK + 9, 34);
    let c = pattern(CHUNK + 1, 35);
    upload(&moto, dir.path(), "img-a/rootfs", &a, &["--md5-metadata"]);
    upload(&moto, dir.path(), "img-b/rootfs", &b, &[]);
    let real_c = upload(&moto, dir.path(), "img-c/rootfs", &c, &[]);
    let md5_a = md5_hex(&a);
    let cfg = write_config(
        dir.path(),
        &moto.endpoint,
        &[
            // The seed incident: no etag in the manifest, md5 present.
            Lun {
                url: "s3://boot-images/img-a/rootfs",
                etag: None,
                md5: Some(&md5_a),
            },
            // Neither etag nor md5: the ETag from HEAD.
            Lun {
                url: "s3://boot-images/img-b/rootfs",
                etag: None,
                md5: None,
            },
            // A stale manifest etag: the object's own ETag is used, and logged.
            Lun {
                url: "s3://boot-images/img-c/rootfs",
                etag: Some("0123456789abcdef0123456789abcdef"),
                md5: None,
            },
        ],
        "",
    );
    let (mut srv, _) = Server::start_config(&cfg);
    for (lun, data) in [(0, &a), (1, &b), (2, &c)] {
        let out = dir.path().join(format!("o{lun}.raw"));
        assert!(convert(&srv, lun, &out));
        check(&out, data);
    }
    srv.stop();
    // Cache entries are named by content key: the md5 for A, the real ETag for C.
    let text = cache_op(&cfg, "stats");
    assert!(text.contains(&md5_a), "{text}");
    assert!(text.contains(&real_c), "{text}");
}

#[test]
fn a_replaced_object_makes_the_lun_stale_never_mixed() {
    let OneImage {
        cfg,
        data: old,
        etag: etag_at_open,
        moto,
        dir,
    } = one_image(
        "PE/live.squashfs",
        6 * CHUNK,
        36,
        &[],
        "readahead_chunks = 0\n",
    );
    let new = pattern(6 * CHUNK, 37);
    let (srv, _) = Server::start_config(&cfg);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    let (d, st, _) = r.command(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096);
    assert_eq!(st, 0);
    assert_eq!(&d[..], &old[..4096]);
    let new_etag = upload(&moto, dir.path(), "PE/live.squashfs", &new, &[]);
    assert_ne!(etag_at_open, new_etag);
    // Chunk 4 was never read: fetching it now would mix versions. It must fail.
    let lba: u32 = (4 * CHUNK / 512) as u32;
    let mut cdb = vec![0x28, 0];
    cdb.extend_from_slice(&lba.to_be_bytes());
    cdb.extend_from_slice(&[0, 0, 8, 0]);
    let (d, st, s) = r.command(0, &cdb, 4096);
    assert_eq!(
        st,
        2,
        "a read of the replaced object must not succeed: got {} bytes",
        d.len()
    );
    assert_eq!(sense(&s).0, 2, "NOT READY");
    // Whatever is still served is the old version, never the new one.
    let (d, st, _) = r.command(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096);
    if st == 0 {
        assert_eq!(&d[..], &old[..4096]);
    }
    r.nop(b"still up");
    // A reload picks up the new version under the same LUN number; the session is
    // told the medium changed, then reads the new bytes.
    srv.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let (_, st, s) = r.command(0, &[0x00], 0);
    assert_eq!(
        (st, sense(&s)),
        (2, (6, 0x28)),
        "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED"
    );
    let (d, st, _) = r.command(0, &cdb, 4096);
    assert_eq!(st, 0);
    assert!(d[..] == new[4 * CHUNK..4 * CHUNK + 4096]);
    let (d, st, _) = r.command(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096);
    assert_eq!(st, 0);
    assert!(
        d[..] == new[..4096],
        "old cached bytes are not served for the new version"
    );
}

/// Two objects with the same bytes (the same ETag) get two caches: a claim of
/// sameness (an ETag or md5 another object also has) never lets one object's cached
/// chunks answer for another. Purge takes an image's URL or everything.
#[test]
fn each_object_has_its_own_cache_and_purge_empties_it() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(3 * CHUNK + 17, 41);
    let e1 = upload(&moto, dir.path(), "img-1/rootfs", &data, &[]);
    let e2 = upload(&moto, dir.path(), "img-2/rootfs", &data, &[]);
    assert_eq!(e1, e2, "same bytes, same ETag");
    let cfg = write_config(
        dir.path(),
        &moto.endpoint,
        &[
            Lun {
                url: "s3://boot-images/img-1/rootfs",
                etag: None,
                md5: None,
            },
            Lun {
                url: "s3://boot-images/img-2/rootfs",
                etag: None,
                md5: None,
            },
        ],
        "",
    );
    {
        let (mut srv, m) = Server::start_config(&cfg);
        let out = dir.path().join("a.raw");
        assert!(convert(&srv, 0, &out));
        check(&out, &data);
        let gets = metric(m, "s3lun_s3_gets_total");
        assert!(convert(&srv, 1, &out));
        check(&out, &data);
        assert!(
            metric(m, "s3lun_s3_gets_total") > gets,
            "LUN 1 was answered from LUN 0's chunks"
        );
        srv.stop();
    }
    let run = |op: &str| cache_op(&cfg, op);
    assert!(run("stats").contains("total 8 chunks"), "{}", run("stats"));
    let purge = |key: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_s3lun"))
            .args([
                "cache",
                "--config",
                cfg.to_str().unwrap(),
                "purge",
                "--key",
                key,
            ])
            .output()
            .expect("s3lun cache purge");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(purge("s3://boot-images/img-1/rootfs").contains("purged 1 content keys"));
    assert!(run("stats").contains("total 4 chunks"));
    assert!(run("purge").contains("purged 1 content keys"));
    assert!(run("stats").contains("total 0 chunks"));
}

#[test]
fn s3_outage_cached_reads_go_on_uncached_fail_in_time() {
    let OneImage {
        cfg,
        data,
        etag,
        mut moto,
        dir,
    } = one_image(
        "PE/out.squashfs",
        8 * CHUNK,
        38,
        &["--multipart"],
        "readahead_chunks = 0\n",
    );
    let port = moto.port;
    let (srv, _) = Server::start_config(&cfg);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    let read = |r: &mut Raw, chunk: usize| {
        let lba = (chunk * CHUNK / 512) as u32;
        let mut cdb = vec![0x28, 0];
        cdb.extend_from_slice(&lba.to_be_bytes());
        cdb.extend_from_slice(&[0, 0x08, 0, 0]); // 2048 blocks: one whole chunk
        r.command(0, &cdb, CHUNK as u32)
    };
    for c in 0..4 {
        let (d, st, _) = read(&mut r, c);
        assert_eq!(st, 0);
        assert!(d[..] == data[c * CHUNK..(c + 1) * CHUNK]);
    }
    moto.stop();
    // Cached chunks still read fully with S3 gone.
    for c in 0..4 {
        let (d, st, _) = read(&mut r, c);
        assert_eq!(st, 0);
        assert!(d[..] == data[c * CHUNK..(c + 1) * CHUNK]);
    }
    // An uncached chunk fails with a retryable error once the deadline (4 s) passes.
    let t = Instant::now();
    let (_, st, s) = read(&mut r, 6);
    let took = t.elapsed();
    assert_eq!(st, 2);
    assert_eq!(sense(&s), (2, 0x04), "NOT READY, retryable");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    r.nop(b"session survives the outage");
    // S3 comes back (same object, same ETag): the read goes through.
    let moto2 = Moto::start_on(port);
    moto2.ctl(&["mkbucket", "boot-images"]);
    assert_eq!(
        upload(
            &moto2,
            dir.path(),
            "PE/out.squashfs",
            &data,
            &["--multipart"]
        ),
        etag
    );
    let (d, st, _) = read(&mut r, 6);
    assert_eq!(st, 0);
    assert!(d[..] == data[6 * CHUNK..7 * CHUNK]);
}

#[test]
fn kill_9_during_a_fill_then_restart_reads_back_exact() {
    let OneImage {
        cfg,
        data,
        etag: _etag,
        moto: _moto,
        dir,
    } = one_image(
        "PE/crash.squashfs",
        40 * CHUNK + 100,
        39,
        &["--multipart"],
        "",
    );
    let (mut srv, m) = Server::start_config(&cfg);
    let url = srv.url(0);
    let out = dir.path().join("partial.raw");
    let mut reader = common::convert_cmd(&url, &out).spawn().expect("qemu-img");
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(m, "s3lun_cache_disk_chunks") < 6 {
        assert!(Instant::now() < deadline, "the fill never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.kill9();
    // libiscsi would keep trying to reconnect to the dead target.
    let _ = reader.kill();
    let _ = reader.wait();
    // Nothing half-written is visible: every chunk on disk checks out.
    let vt = cache_op(&cfg, "verify");
    assert!(vt.contains(", 0 bad"), "{vt}");
    let survived: u64 = vt
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((6..41).contains(&survived), "{vt}");
    let (srv, m) = Server::start_config(&cfg);
    let out = dir.path().join("after.raw");
    assert!(convert(&srv, 0, &out));
    check(&out, &data);
    let fetched = metric(m, "s3lun_cache_misses_total");
    assert_eq!(
        fetched + survived,
        41,
        "surviving chunks were reused, the rest fetched once"
    );
}

#[test]
fn warm_fills_the_cache_before_the_storm() {
    let OneImage {
        cfg,
        data,
        etag: _etag,
        moto: _moto,
        dir,
    } = one_image("PE/warm.squashfs", 5 * CHUNK + 3, 40, &[], "");
    let w = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["warm", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&w.stdout);
    assert!(
        w.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&w.stderr)
    );
    assert!(
        text.contains(&format!(
            "warmed s3://boot-images/PE/warm.squashfs: {} bytes",
            data.len()
        )),
        "{text}"
    );
    let (srv, m) = Server::start_config(&cfg);
    let out = dir.path().join("w.raw");
    assert!(convert(&srv, 0, &out));
    check(&out, &data);
    assert_eq!(
        metric(m, "s3lun_s3_gets_total"),
        0,
        "the boot read only the warm cache"
    );
}
