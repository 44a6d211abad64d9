//! The boot-storm generator (`s3lun-storm`, benches/storm/) and its proxies, tested
//! at a tiny N against a real s3lun and moto: a run boots every node and reads right,
//! a single wrong byte fails it, held sessions survive the target's NOPs, the S3
//! shaper adds its latency and keeps to its bandwidth, and the recorder writes down
//! what an initiator read. (The benchmark itself is benches/storm.sh; never timed here
//! beyond what the shaper promises.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::*;

const TARGET: &str = "iqn.2023-06.csm.iscsi:s3lun-test";

fn storm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_s3lun-storm")
}

/// The committed trace of a real kernel mounting a small squashfs.
fn small_trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/storm/traces/small.trace")
}

/// A storm of the small trace against `portal`, reads checked against `image`.
fn storm_small(portal: &str, image: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let trace = small_trace();
    let mut args = vec![
        "--portal",
        portal,
        "--target",
        TARGET,
        "--trace",
        trace.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    storm(&args)
}

/// `s3lun-storm run` with `args`: its exit and its JSON summary.
fn storm(args: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(storm_bin())
        .arg("run")
        .args(args)
        .output()
        .expect("s3lun-storm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out, summary)
}

#[test]
fn a_storm_boots_every_node_and_one_wrong_byte_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, data) = serve_image(dir.path(), 4 << 20, &[]);
    let img = dir.path().join("img");
    let portal = srv.addr.clone();
    let pid = srv.pid().to_string();
    let (out, s) = storm_small(
        &portal,
        &img,
        &[
            "--nodes",
            "8",
            "--hold",
            "--probes",
            "2",
            "--watch-pid",
            &pid,
        ],
    );
    assert!(out.status.success(), "{s}");
    assert_eq!(s["booted"], 8, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["wrong_reads"], 0, "{s}");
    assert_eq!(s["sessions_held"], 8, "{s}");
    assert_eq!(
        s["reads"],
        8 * 47,
        "every read of the trace, every node: {s}"
    );
    assert!(s["probe_login_ms"]["max"].as_f64().unwrap() > 0.0, "{s}");
    assert!(
        s["target"]["peak_fds"].as_u64().unwrap() >= 8,
        "the target was watched: {s}"
    );

    // One byte the trace reads differs between the served image and the reference.
    let trace = std::fs::read_to_string(small_trace()).unwrap();
    let lba: usize = trace
        .lines()
        .filter(|l| !l.starts_with('#'))
        .nth(10)
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap();
    let at = lba * 512 + 333;
    let mut bad = data.clone();
    bad[at] ^= 0x20;
    let bad_img = dir.path().join("bad");
    std::fs::write(&bad_img, &bad).unwrap();
    let (out, s) = storm_small(&portal, &bad_img, &["--nodes", "3"]);
    assert!(!out.status.success(), "a wrong byte must fail the run: {s}");
    assert_eq!(s["wrong_reads"], 3, "{s}");
    assert!(
        s["first_errors"][0]
            .as_str()
            .unwrap()
            .contains(&format!("wrong byte at image offset {at}")),
        "{s}"
    );
}

#[test]
fn held_sessions_answer_the_targets_nops() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = serve_image(
        dir.path(),
        4 << 20,
        &["--nop-interval", "1", "--nop-timeout", "2"],
    );
    let img = dir.path().join("img");
    let t = Instant::now();
    let (out, s) = storm_small(
        &srv.addr,
        &img,
        &[
            "--nodes",
            "5",
            "--hold",
            "--hold-secs",
            "5",
            "--no-discovery",
        ],
    );
    assert!(out.status.success(), "{s}");
    assert!(t.elapsed() >= Duration::from_secs(5));
    // A session that left a NOP unanswered for 2 s would have been closed, and its
    // node would report the target closing the connection.
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["sessions_held"], 5, "{s}");
}

/// (seconds to the first byte, seconds in all) of one signed GET through curl,
/// which must answer 200 with `len` bytes.
fn timed_get(url: &str, len: usize) -> (f64, f64) {
    let out = run(
        "curl",
        &[
            "-s",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "test:test",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download} %{http_code}",
            url,
        ],
    );
    let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!((v[2] as usize, v[3] as u16), (len, 200), "GET {url}: {out}");
    (v[0], v[1])
}

#[test]
fn the_shaper_adds_its_latency_and_keeps_to_its_bandwidth() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "shaped"]);
    moto.put(dir.path(), "shaped", "small", b"hello", &[]);
    moto.put(dir.path(), "shaped", "big", &pattern(2_000_000, 3), &[]);
    let direct = timed_get(&format!("http://127.0.0.1:{}/shaped/small", moto.port), 5);
    let stats = dir.path().join("stats.json");
    let (_shape, port) = shaper(moto.port, 300, 4.0, &stats);
    let (first, _) = timed_get(&format!("http://127.0.0.1:{port}/shaped/small"), 5);
    assert!(
        first >= 0.3 && first >= direct.0 + 0.25,
        "first byte after {first} s, {} s direct",
        direct.0
    );
    // 2 MB at 4 MB/s: half a second more than the latency.
    let (_, total) = timed_get(&format!("http://127.0.0.1:{port}/shaped/big"), 2_000_000);
    assert!(total >= 0.3 + 0.45, "2 MB in {total} s at 4 MB/s");
    std::thread::sleep(Duration::from_millis(300));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(s["requests"], 2, "{s}");
    assert!(s["bytes"].as_u64().unwrap() >= 2_000_005, "{s}");
}

#[test]
fn the_recorder_writes_down_what_the_initiator_read() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = serve_image(dir.path(), 4 << 20, &[]);
    let img = dir.path().join("img");
    let port = free_port();
    let recorded = dir.path().join("recorded.trace");
    let _rec = Helper(
        Command::new(storm_bin())
            .args([
                "record",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &srv.addr,
            ])
            .arg("--out")
            .arg(&recorded)
            .args(["--image-bytes", "4194304"])
            .stderr(Stdio::null())
            .spawn()
            .expect("s3lun-storm record"),
    );
    wait_listening(port, "the recorder");
    let (out, s) = storm_small(&format!("127.0.0.1:{port}"), &img, &["--no-discovery"]);
    assert!(out.status.success(), "{s}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorded.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let reads = |p: &Path| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
                (f[2], f[3])
            })
            .collect();
        // The first READ of a session meets its unit attention and is sent again.
        v.dedup();
        v
    };
    let text = std::fs::read_to_string(&recorded).unwrap();
    assert!(text.contains("# image_bytes 4194304"), "{text}");
    assert_eq!(reads(&recorded), reads(&small_trace()));
}
