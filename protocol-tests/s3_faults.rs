//! S3 and cache-disk faults against real peers: moto behind a proxy that answers 500
//! and 503, stalls, truncates bodies, lies about Content-Length or the ETag; a cache
//! directory that is full (a 3 MiB tmpfs) or cannot be created; kill -9 at random
//! moments of a fill. Bytes served are always the object's, or an error: never others.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::faulty::Proxy;
use common::moto::Moto;
use common::raw::{read10, sense, Raw};
use common::{pattern, Server};

const CHUNK: usize = 1 << 20;
const KEY: &str = "PE/faults.squashfs";

/// Config for one LUN from `endpoint`: three attempts of at most 2 s, 8 s per read.
fn config(dir: &Path, endpoint: &str, cache_dir: &Path, readahead: u32) -> PathBuf {
    let t = format!(
        "[s3]\nendpoint = \"{endpoint}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n\
         attempts = 3\nattempt_timeout_secs = 2\ndeadline_secs = 8\n\
         [cache]\ndir = \"{}\"\nchunk_size = {CHUNK}\nmemory_bytes = 2097152\nreadahead_chunks = {readahead}\n\
         [[lun]]\ns3 = \"s3://boot-images/{KEY}\"\n",
        cache_dir.display()
    );
    let p = dir.join("s3lun.toml");
    std::fs::write(&p, t).unwrap();
    p
}

fn setup(chunks: usize, seed: u64) -> (tempfile::TempDir, Moto, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(chunks * CHUNK, seed);
    moto.put(dir.path(), "boot-images", KEY, &data, &[]);
    (dir, moto, data)
}

/// moto, the fault proxy in front of it, and s3lun reading through the proxy (no
/// read-ahead, so each read is one GET) with a session logged in.
struct Proxied {
    r: Raw,
    srv: Server,
    proxy: Proxy,
    cfg: PathBuf,
    data: Vec<u8>,
    _moto: Moto,
    _dir: tempfile::TempDir,
}

fn proxied(chunks: usize, seed: u64) -> Proxied {
    let (dir, moto, data) = setup(chunks, seed);
    let proxy = Proxy::start(moto.port);
    let cfg = config(dir.path(), &proxy.endpoint, &dir.path().join("cache"), 0);
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    let r = session(&srv);
    Proxied {
        r,
        srv,
        proxy,
        cfg,
        data,
        _moto: moto,
        _dir: dir,
    }
}

fn session(srv: &Server) -> Raw {
    Raw::session(srv.port)
}

/// READ(10) of one whole chunk: data, status, sense segment.
fn read_chunk(r: &mut Raw, chunk: usize) -> (Vec<u8>, u8, Vec<u8>) {
    let lba = (chunk * CHUNK / 512) as u32;
    r.command(0, &read10(lba, (CHUNK / 512) as u16), CHUNK as u32)
}

fn assert_chunk(r: &mut Raw, data: &[u8], chunk: usize, what: &str) {
    let (d, st, s) = read_chunk(r, chunk);
    assert_eq!(st, 0, "{what}: status {st}, sense {s:?}");
    assert!(
        d[..] == data[chunk * CHUNK..(chunk + 1) * CHUNK],
        "{what}: wrong bytes"
    );
}

fn cache_verify(cfg: &Path) -> String {
    common::cache_op(cfg, "verify")
}

#[test]
fn transient_faults_are_retried_and_bytes_stay_exact() {
    let mut p = proxied(8, 61);
    for (chunk, mode) in ["500", "503", "truncate", "short", "long"]
        .into_iter()
        .enumerate()
    {
        let before = p.proxy.served();
        p.proxy.arm(mode, 1);
        assert_chunk(&mut p.r, &p.data, chunk, mode);
        assert_eq!(
            p.proxy.served(),
            before + 1,
            "{mode}: the fault was injected"
        );
    }
    // Nothing a fault produced reached the disk cache.
    p.srv.stop();
    let v = cache_verify(&p.cfg);
    assert!(v.contains("5 good chunks, 0 bad"), "{v}");
}

#[test]
fn persistent_faults_fail_in_time_and_heal() {
    let mut p = proxied(4, 62);
    for (chunk, mode) in [(0, "503"), (1, "stall"), (2, "truncate")] {
        p.proxy.arm(mode, 1000);
        let t = Instant::now();
        let (d, st, s) = read_chunk(&mut p.r, chunk);
        let took = t.elapsed();
        assert_eq!(st, 2, "{mode}: CHECK CONDITION");
        assert!(d.is_empty(), "{mode}: no data with the error");
        assert_eq!(sense(&s), (2, 0x04), "{mode}: NOT READY, retryable");
        assert!(took < Duration::from_secs(15), "{mode}: took {took:?}");
        p.r.nop(b"still here");
        p.proxy.arm(mode, 0);
        assert_chunk(&mut p.r, &p.data, chunk, mode);
    }
}

#[test]
fn a_body_under_another_etag_is_never_served() {
    let mut p = proxied(4, 63);
    assert_chunk(&mut p.r, &p.data, 0, "before");
    p.proxy.arm("etag", 1000);
    let (d, st, _) = read_chunk(&mut p.r, 1);
    assert!(p.proxy.served() >= 1);
    assert_eq!(st, 2, "an ETag other than the content key's is an error");
    assert!(d.is_empty());
    // The cached chunk of the version we know still reads.
    assert_chunk(&mut p.r, &p.data, 0, "cached");
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn convert_and_check(srv: &Server, out: &Path, data: &[u8]) {
    assert!(common::convert(&srv.url(0), out), "qemu-img convert");
    common::check_image(out, data);
}

#[test]
fn a_full_cache_disk_serves_from_s3_and_says_so() {
    let (dir, moto, data) = setup(8, 64);
    let cache = dir.path().join("cache");
    let _fs = Tmpfs::mount(&cache, "3m");
    let cfg = config(dir.path(), &moto.endpoint, &cache, 2);
    let log = dir.path().join("s3lun.log");
    let srv = Server::start_logged(&["--config", cfg.to_str().unwrap()], "warn", &log);
    convert_and_check(&srv, &dir.path().join("a.raw"), &data);
    convert_and_check(&srv, &dir.path().join("b.raw"), &data);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("disk tier off, serving from S3 without caching"),
        "{text}"
    );
    let v = cache_verify(&cfg);
    assert!(v.contains(", 0 bad"), "{v}");
}

#[test]
fn an_unusable_cache_dir_serves_from_s3_and_says_so() {
    let (dir, moto, data) = setup(3, 65);
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cfg = config(dir.path(), &moto.endpoint, &file.join("cache"), 2);
    let log = dir.path().join("s3lun.log");
    let srv = Server::start_logged(&["--config", cfg.to_str().unwrap()], "warn", &log);
    convert_and_check(&srv, &dir.path().join("a.raw"), &data);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cache directory unusable: memory tier only"),
        "{text}"
    );
}

#[test]
fn kill_9_at_random_moments_then_restart_reads_back_exact() {
    let (dir, moto, data) = setup(24, 66);
    let cfg = config(dir.path(), &moto.endpoint, &dir.path().join("cache"), 4);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(50 + seed % 1200);
        eprintln!("round {round}: kill -9 after {delay:?}");
        let mut srv = Server::start(&["--config", cfg.to_str().unwrap()]);
        let out = dir.path().join(format!("partial{round}.raw"));
        let mut reader = common::convert_cmd(&srv.url(0), &out)
            .spawn()
            .expect("qemu-img");
        std::thread::sleep(delay);
        srv.kill9();
        let _ = reader.kill();
        let _ = reader.wait();
        let v = cache_verify(&cfg);
        assert!(v.contains(", 0 bad"), "round {round}: {v}");
    }
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    convert_and_check(&srv, &dir.path().join("final.raw"), &data);
}
