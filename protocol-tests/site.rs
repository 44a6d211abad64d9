//! Site-sized images, scaled down to run in CI against a real S3 server (moto):
//! demand first (random reads fetch exactly the chunks they touch, a proven
//! sequential reader is read ahead, a read overtakes background fetching), RSS
//! bounded under a storm, and boot profiles (recorded by the first boots, published
//! once however many workers race, used by the next worker from its first read on to
//! prefetch what the boot reads next, ignored with a log line when garbage or
//! oversized, shown and dropped by `s3lun profile`). Cache eviction by chunk, the index's memory and a
//! restart that keeps and re-checks the cache are unit tests of the disk tier
//! (src/store/cache/disk.rs); demand reads overtaking background runs are
//! src/store/cache/priority.rs's (with an in-memory link) and
//! `a_demand_read_overtakes_background_fetching` here (moto behind the shaper).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::moto::{metric, metric_or_zero, Moto};
use common::raw::{read10, Raw};
use common::{eventually, pattern, Server};

const CHUNK: usize = 64 << 10;
const KEY: &str = "PE/site.img";
const URL: &str = "s3://boot-images/PE/site.img";

fn config(dir: &Path, name: &str, endpoint: &str, extra: &str) -> PathBuf {
    let memory = if extra.contains("memory_bytes") {
        ""
    } else {
        "memory_bytes = 16777216\n"
    };
    let t = format!(
        "[s3]\nendpoint = \"{endpoint}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n\
         [cache]\ndir = \"{}\"\nchunk_size = {CHUNK}\n{memory}{extra}\n\
         [[lun]]\ns3 = \"{URL}\"\n",
        dir.join(format!("cache-{name}")).display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, t).unwrap();
    p
}

/// Read chunk `i` (whole) and check it.
fn read_chunk(r: &mut Raw, data: &[u8], i: usize) {
    let lba = (i * CHUNK / 512) as u32;
    let (d, st, s) = r.command(0, &read10(lba, (CHUNK / 512) as u16), CHUNK as u32);
    assert_eq!(st, 0, "chunk {i}: sense {s:?}");
    assert!(d[..] == data[i * CHUNK..(i + 1) * CHUNK], "chunk {i} exact");
}

/// `s3lun COMMAND --config CFG ARGS...`.
fn s3lun(args: &[&str], cfg: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .arg(args[0])
        .args(["--config", cfg.to_str().unwrap()])
        .args(&args[1..])
        .output()
        .expect("s3lun")
}

#[test]
fn random_reads_fetch_only_what_they_touch_and_a_sequential_reader_is_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let chunks = 256;
    let data = pattern(chunks * CHUNK, 11);
    moto.put(dir.path(), "boot-images", KEY, &data, &[]);
    let cfg = config(dir.path(), "a", &moto.endpoint, "profiles = false");
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::session(srv.port);
    // 4 KiB reads, each 11 chunks on from the last, modulo the image: none lands
    // within 10 chunks of any of the 16 before it, so none continues a stream (a
    // random trace). Every one is a miss of one chunk; nothing else may be fetched.
    let mut at = 0;
    for n in 1..=60u64 {
        at = (at + 11) % chunks;
        let lba = (at * CHUNK / 512 + 3) as u32;
        let (d, st, _) = r.command(0, &read10(lba, 8), 4096);
        assert_eq!(st, 0);
        assert!(d[..] == data[lba as usize * 512..lba as usize * 512 + 4096]);
        assert_eq!(
            metric(mport, "s3lun_cache_fetched_bytes_total"),
            n * CHUNK as u64,
            "read {n}: only the chunk it touched"
        );
    }
    drop((r, srv));
    // A reader going front to back through an empty cache: once it proved
    // sequential, read-ahead fetches in larger GETs, and no chunk twice.
    let cfg = config(dir.path(), "b", &moto.endpoint, "profiles = false");
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::session(srv.port);
    let requests = metric(mport, "s3lun_s3_requests_total");
    for i in 0..chunks {
        read_chunk(&mut r, &data, i);
    }
    let fetched = metric(mport, "s3lun_cache_fetched_bytes_total");
    assert_eq!(fetched, (chunks * CHUNK) as u64, "every chunk once");
    let gets = metric(mport, "s3lun_s3_requests_total") - requests;
    assert!(
        gets <= chunks as u64 / 3,
        "{gets} GETs for {chunks} chunks read in order: read-ahead should batch them"
    );
}

/// The profile object named by `s3lun profile show`.
fn profile_key(cfg: &Path) -> String {
    let out = s3lun(&["profile", "show", URL], cfg);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("profile"))
        .expect("profile line");
    let url = line.split_whitespace().nth(1).expect("url");
    url.strip_prefix("s3://boot-images/")
        .expect("bucket")
        .to_string()
}

#[test]
fn a_profile_is_published_once_and_used_by_the_next_worker_and_garbage_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(64 * CHUNK, 5);
    moto.put(dir.path(), "boot-images", KEY, &data, &[]);
    let boot = [40, 41, 3, 20, 63];
    // Three workers boot at once, each records for a second, all try to publish.
    let mut first = Vec::new();
    for name in ["w1", "w2", "w3"] {
        let cfg = config(dir.path(), name, &moto.endpoint, "profile_secs = 1");
        let log = dir.path().join(format!("{name}.log"));
        let (srv, _) = Server::start_config_logged(&cfg, "info", &log);
        let mut r = Raw::session(srv.port);
        for i in boot {
            read_chunk(&mut r, &data, i);
        }
        first.push((srv, r, log));
    }
    let said = |log: &PathBuf, what: &str| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    eventually("every worker is done with its profile", 20, || {
        first.iter().all(|(_, _, log)| {
            said(log, "boot profile published") + said(log, "another worker published first") == 1
        })
    });
    let published: usize = first
        .iter()
        .map(|(_, _, log)| said(log, "boot profile published"))
        .sum();
    assert_eq!(published, 1, "one profile, however many raced");
    drop(first);
    let show = config(dir.path(), "tool", &moto.endpoint, "");
    let out = s3lun(&["profile", "show", URL], &show);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("extents    4 "),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The next worker: its first read finds the profile, and the rest of the
    // profile's chunks are fetched before the boot asks for them.
    let cfg = config(dir.path(), "w4", &moto.endpoint, "");
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::session(srv.port);
    read_chunk(&mut r, &data, boot[0]);
    eventually("the profile's chunks prefetched", 20, || {
        metric_or_zero(mport, "s3lun_cache_profiles_used_total") == 1
            && metric(mport, "s3lun_cache_fetched_bytes_total") == (boot.len() * CHUNK) as u64
    });
    for i in boot {
        read_chunk(&mut r, &data, i);
    }
    assert_eq!(
        metric(mport, "s3lun_cache_fetched_bytes_total"),
        (boot.len() * CHUNK) as u64,
        "the boot found every chunk there"
    );
    drop((r, srv));
    // Garbage where the profile was: ignored with a log line, the LUN serves on.
    let key = profile_key(&show);
    let out = s3lun(&["profile", "drop", URL], &show);
    assert!(out.status.success());
    assert!(!s3lun(&["profile", "show", URL], &show).status.success());
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"{\"version\": 1, \"extents\": [[0, 1e99]]}").unwrap();
    moto.ctl(&["put", "boot-images", &key, garbage.to_str().unwrap()]);
    let log = dir.path().join("w5.log");
    let cfg = config(dir.path(), "w5", &moto.endpoint, "");
    let (srv, mport) = Server::start_config_logged(&cfg, "info", &log);
    let mut r = Raw::session(srv.port);
    read_chunk(&mut r, &data, 7);
    eventually("the garbage profile ignored", 20, || {
        metric_or_zero(mport, "s3lun_cache_profiles_ignored_total") == 1
    });
    assert_eq!(said(&log, "boot profile ignored"), 1);
    read_chunk(&mut r, &data, 8);
    assert_eq!(
        metric(mport, "s3lun_cache_fetched_bytes_total"),
        2 * CHUNK as u64,
        "nothing fetched for it"
    );
    drop((r, srv));
    // An oversized profile (more than profile_max_bytes) is ignored too, and nothing
    // is fetched for it.
    moto.ctl(&["delete", "boot-images", &key]);
    let cfg = config(dir.path(), "w6", &moto.endpoint, "profile_secs = 1");
    let (srv, _) = Server::start_config(&cfg);
    let mut r = Raw::session(srv.port);
    for i in boot {
        read_chunk(&mut r, &data, i);
    }
    eventually("a profile again", 20, || {
        s3lun(&["profile", "show", URL], &show).status.success()
    });
    drop((r, srv));
    let cfg = config(
        dir.path(),
        "w7",
        &moto.endpoint,
        &format!("profile_max_bytes = {CHUNK}"),
    );
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::session(srv.port);
    read_chunk(&mut r, &data, 9);
    eventually("the oversized profile ignored", 20, || {
        metric_or_zero(mport, "s3lun_cache_profiles_ignored_total") == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        metric(mport, "s3lun_cache_fetched_bytes_total"),
        CHUNK as u64,
        "nothing fetched for it"
    );
    drop((r, srv));
}

#[test]
fn a_storm_on_an_image_larger_than_memory_keeps_rss_bounded() {
    // 8 sessions read a 32 MiB image front to back, 1 MiB at a time, through a memory
    // tier of 4 MiB: what the process holds beyond its start must stay near the
    // tier's size (the chunks waiting for the disk writer are part of it), not grow
    // with the image.
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(512 * CHUNK, 13);
    moto.put(dir.path(), "boot-images", KEY, &data, &[]);
    let cfg = config(dir.path(), "rss", &moto.endpoint, "memory_bytes = 4194304");
    let (srv, mport) = Server::start_config(&cfg);
    let before = common::status_kib(srv.pid(), "VmRSS:");
    assert!(before > 0, "RSS readable");
    let data = std::sync::Arc::new(data);
    let readers: Vec<_> = (0..8u64)
        .map(|n| {
            let (port, data) = (srv.port, std::sync::Arc::clone(&data));
            std::thread::spawn(move || {
                let mut r =
                    Raw::as_initiator(port, &format!("iqn.2026-12.org.s3lun:rss{n}"), n as u16);
                r.login_normal(common::TARGET, &[]);
                let _ = r.command(0, &[0x00], 0);
                for mib in 0..data.len() / (1 << 20) {
                    let lba = (mib * (1 << 20) / 512) as u32;
                    let (d, st, _) = r.command(0, &read10(lba, 2048), 1 << 20);
                    assert_eq!(st, 0);
                    assert!(d[..] == data[mib << 20..(mib + 1) << 20], "MiB {mib} exact");
                }
            })
        })
        .collect();
    let mut peak = before;
    while readers.iter().any(|t| !t.is_finished()) {
        peak = peak.max(common::status_kib(srv.pid(), "VmRSS:"));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for t in readers {
        t.join().unwrap();
    }
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "RSS {} MiB at start, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    assert!(
        metric(mport, "s3lun_cache_fetched_bytes_total") >= data.len() as u64,
        "the image was read through the cache"
    );
    assert!(
        grew_mib < 24,
        "RSS grew {grew_mib} MiB for a 4 MiB memory tier"
    );
}

#[test]
fn a_demand_read_overtakes_background_fetching() {
    // A 16 MiB image fetched whole in the background (configured), one 4 MiB GET
    // at a time, over a 10 MB/s link: 0.4 s a GET, 1.7 s for all of it. A read near
    // the end, issued as the background starts, must wait for neither (15 ms and
    // its 64 KiB, with the link shared).
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let chunks = 256;
    let data = pattern(chunks * CHUNK, 17);
    moto.put(dir.path(), "boot-images", KEY, &data, &[]);
    let (_link, port) = common::shaper(moto.port, 15, 10.0, &dir.path().join("s3.json"));
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = config(
        dir.path(),
        "bg",
        &endpoint,
        "profiles = false\nprefetch_whole_max_bytes = 1073741824\n\
         prefetch_gets = 1\nprefetch_gets_per_image = 1",
    );
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::session(srv.port);
    let t = std::time::Instant::now();
    read_chunk(&mut r, &data, 250);
    let waited = t.elapsed();
    eprintln!("the read near the end waited {waited:?}");
    assert!(
        waited < std::time::Duration::from_millis(250),
        "the read waited {waited:?} behind background fetching"
    );
    // The background goes on to the whole image, and no chunk crosses twice.
    eventually("the whole image fetched in the background", 30, || {
        metric(mport, "s3lun_cache_fetched_bytes_total") == data.len() as u64
    });
    for i in [0, 100, 255] {
        read_chunk(&mut r, &data, i);
    }
    assert_eq!(
        metric(mport, "s3lun_cache_fetched_bytes_total"),
        data.len() as u64
    );
}
