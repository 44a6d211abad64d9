//! A real Linux kernel as the initiator: a Debian cloud kernel (extracted from its
//! package) boots under QEMU/TCG (1) with a small initramfs that logs in with
//! open-iscsi's `iscsistart`, mounts the LUN as squashfs and reads it back, and (2)
//! with a Debian dracut initramfs and `root=iscsi:...`, which discovers the target
//! with SendTargets through iscsid/iscsiadm (as compute nodes do), mounts the
//! squashfs as the root filesystem and runs its init. The kernel log must show the LU
//! as LIO would present it: write-protected, vendor LIO-ORG, the expected WWID, and no
//! SCSI errors. (3) With iscsid in the guest, reads of a mounted LUN go on across a
//! kill -9 and a drain of the target, each followed by a restart. (4) With Debian's
//! generic kernel (ALUA device handler, dm-multipath) and multipath-tools, one map
//! over two s3lun instances rides through draining one, restarting it and killing
//! the other.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, make_squashfs, tool, Server};
use md5::{Digest, Md5};

/// Identity of the PE example in DESIGN.md; LIO gives it WWID
/// 36001405de4cc04e7dacfb9ada0a6b4cc.
const PE_IDENTITY: &str = "s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs";
const PE_WWID: &str = "36001405de4cc04e7dacfb9ada0a6b4cc";

fn assets() -> PathBuf {
    prepared("prepare.sh", "kernel-boot")
}

/// Run `protocol-tests/kernel/<script>`; its output is `target/<dir>`.
fn prepared(script: &str, dir: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("bash")
        .arg(root.join("protocol-tests/kernel").join(script))
        .status()
        .expect("run the kernel asset script");
    assert!(
        st.success(),
        "{script}: preparing the kernel and initramfs failed"
    );
    root.join("target").join(dir)
}

/// s3lun on a loopback port, advertising the address the guest reaches it by: QEMU
/// user networking maps 10.0.2.2 to the host.
///
/// With S3LUN_CAPTURE_DIR set, the guest reaches s3lun through `fuzz/capture.py`,
/// which records what the kernel initiator sends (seeds for the fuzz targets).
fn guest_target(target: &str, extra: &[&str]) -> (Server, u16) {
    let capture = std::env::var("S3LUN_CAPTURE_DIR").ok();
    let real = free_port();
    let port = if capture.is_some() { free_port() } else { real };
    let listen = format!("127.0.0.1:{real}");
    let advertise = format!("10.0.2.2:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--advertise",
        &advertise,
        "--target-name",
        target,
    ];
    args.extend_from_slice(extra);
    let mut srv = Server::start_raw(&args);
    if let Some(dir) = capture {
        let proxy = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/capture.py"))
            .args([port.to_string(), real.to_string(), dir])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fuzz/capture.py");
        srv.companions.push(proxy);
        std::thread::sleep(Duration::from_millis(500));
    }
    (srv, port)
}

/// The guest finished and every one of its `rounds` read `want_md5`.
fn check_rounds(log: &str, rounds: u32, want_md5: &str) {
    assert!(
        log.contains("S3LUN-GUEST: done"),
        "guest did not finish:\n{log}"
    );
    for n in 0..rounds {
        assert!(
            log.contains(&format!("S3LUN-GUEST: round {n} {want_md5}")),
            "round {n} missing or wrong:\n{log}"
        );
    }
}

/// QEMU (TCG, one CPU, user networking) running `assets`' kernel with `initrd`, its
/// serial console on stdout.
fn qemu(assets: &Path, initrd: &str, cmdline: &str) -> std::process::Child {
    Command::new(tool("qemu-system-x86_64"))
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(assets.join("vmlinuz"))
        .arg("-initrd")
        .arg(assets.join(initrd))
        .args(["-append", &format!("console=ttyS0 panic=-1 {cmdline}")])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu")
}

/// Boot the guest; return everything it printed on the serial console.
fn boot(assets: &Path, initrd: &str, cmdline: &str, deadline: Duration) -> String {
    let mut child = qemu(assets, initrd, cmdline);
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).to_string()
    });
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reader.join().unwrap_or_default()
}

/// The test squashfs image and the md5 of the file the guests read from it.
fn squashfs_and_md5(dir: &Path) -> (PathBuf, String) {
    let (img, _) = make_squashfs(dir);
    let big = std::fs::read(dir.join("root/big.bin")).expect("big.bin");
    (img, hex::encode(Md5::digest(&big)))
}

/// What the filesystem (not a path underneath it) reports when a read failed.
const FILESYSTEM_ERRORS: [&str; 3] = ["Buffer I/O", "SQUASHFS error", "critical medium error"];

fn check_kernel_log(log: &str) {
    for bad in [
        "I/O error",
        "Sense Key",
        "FAILED Result",
        "critical medium error",
        "Buffer I/O",
    ] {
        assert!(!log.contains(bad), "kernel reported {bad:?}:\n{log}");
    }
    assert!(log.contains("[sda] Write Protect is on"), "{log}");
    assert!(log.contains("Direct-Access     LIO-ORG"), "{log}");
}

#[test]
fn kernel_boots_and_mounts_the_lun_with_iscsistart() {
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    let (img, want_md5) = squashfs_and_md5(dir.path());
    let cfg = dir.path().join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[lun]]\npath = \"{}\"\nidentity = \"{PE_IDENTITY}\"\n",
            img.display()
        ),
    )
    .unwrap();
    let target = "iqn.2023-06.csm.iscsi:kernel-boot";
    let (mut srv, port) = guest_target(target, &["--config", cfg.to_str().unwrap()]);
    let log = boot(
        &assets,
        "initrd.gz",
        &format!("s3lun.addr=10.0.2.2 s3lun.port={port} s3lun.target={target}"),
        Duration::from_secs(300),
    );
    eprintln!("{log}");
    assert!(
        log.contains("S3LUN-GUEST: done"),
        "guest did not finish:\n{log}"
    );
    assert!(
        log.contains("S3LUN-GUEST: marker s3lun-squashfs-marker"),
        "{log}"
    );
    assert!(
        log.contains(&format!("S3LUN-GUEST: md5 {want_md5}")),
        "file read through the kernel differs from the image:\n{log}"
    );
    // /sys/block/sda/device/wwid is "naa." + the NAA designator; multipath prefixes 3.
    let wwid = log
        .lines()
        .find_map(|l| l.strip_prefix("S3LUN-GUEST: wwid naa."))
        .map(|w| format!("3{}", w.trim()))
        .unwrap_or_default();
    assert_eq!(wwid, PE_WWID, "{log}");
    assert!(log.contains("S3LUN-GUEST: vendor LIO-ORG  ro 1"), "{log}");
    check_kernel_log(&log);
    assert!(srv.alive());
}

/// A squashfs root filesystem whose /sbin/init reports and powers off.
fn make_root(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("rootfs");
    for d in ["bin", "sbin", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/kernel/root-init");
    std::fs::copy(init, root.join("sbin/init")).unwrap();
    std::fs::write(root.join("etc/marker"), "s3lun-dracut-marker\n").unwrap();
    let big = common::pattern(2 * 1024 * 1024 + 333, 77);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let img = dir.join("rootfs.squashfs");
    common::run(
        "mksquashfs",
        &[
            root.to_str().unwrap(),
            img.to_str().unwrap(),
            "-noappend",
            "-quiet",
            "-no-progress",
        ],
    );
    (img, hex::encode(Md5::digest(&big)))
}

#[test]
fn dracut_discovers_and_boots_a_squashfs_root() {
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    let (img, want_md5) = make_root(dir.path());
    let target = "iqn.2023-06.csm.iscsi:dracut-boot";
    let (mut srv, port) = guest_target(target, &["--lun", img.to_str().unwrap()]);
    let log = boot(
        &assets,
        "dracut.img",
        &format!(
            "ip=dhcp root=iscsi:10.0.2.2::{port}:0:{target} rootfstype=squashfs ro \
             rd.iscsi.initiator=iqn.2024-01.org.s3lun:dracut rd.shell=0 rd.retry=30"
        ),
        Duration::from_secs(400),
    );
    eprintln!("{log}");
    assert!(
        log.contains("S3LUN-ROOT: done"),
        "the squashfs root never ran its init:\n{log}"
    );
    assert!(
        log.contains("S3LUN-ROOT: running from /dev/sda squashfs"),
        "{log}"
    );
    assert!(
        log.contains("S3LUN-ROOT: marker s3lun-dracut-marker"),
        "{log}"
    );
    assert!(
        log.contains(&format!("S3LUN-ROOT: md5 {want_md5}")),
        "{log}"
    );
    // dracut logs in through the node record that SendTargets discovery created.
    assert!(
        log.contains(&format!(
            "Login to [iface: default, target: {target}, portal: 10.0.2.2,{port}] successful"
        )),
        "{log}"
    );
    let id = s3lun::scsi::Identity::lio(&format!(
        "file://{}",
        std::fs::canonicalize(&img).unwrap().display()
    ));
    assert!(
        log.contains(&format!("S3LUN-ROOT: wwid naa.{}", &id.wwid()[1..])),
        "{log}"
    );
    check_kernel_log(&log);
    assert!(srv.alive());
}

/// The root image as sites have it: big (a squashfs at the front of a 2 GiB image,
/// sparse past it: more than 2^31 bytes), in Ceph RGW, uploaded in 8 MiB parts, read
/// through the cache in 128 KiB chunks, demand first. dracut boots from it.
#[test]
fn dracut_boots_a_root_from_a_big_sparse_image_in_ceph_rgw() {
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    let (img, want_md5) = make_root(dir.path());
    let big = dir.path().join("big.img");
    std::fs::copy(&img, &big).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .and_then(|f| f.set_len((2 << 30) + 4096))
        .unwrap();
    let rgw = common::rgw::Rgw::start();
    let s3 = common::moto::Moto::attach(&rgw.endpoint);
    s3.ctl(&["mkbucket", "boot-images"]);
    let path = big.to_str().unwrap();
    s3.ctl(&[
        "put",
        "boot-images",
        "PE/big.img",
        path,
        "--multipart",
        "--part-mb",
        "8",
    ]);
    let cfg = dir.path().join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n\
             [cache]\ndir = \"{}\"\n[[lun]]\ns3 = \"s3://boot-images/PE/big.img\"\n",
            rgw.endpoint,
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let target = "iqn.2023-06.csm.iscsi:big-boot";
    let (mut srv, port) = guest_target(target, &["--config", cfg.to_str().unwrap()]);
    let log = boot(
        &assets,
        "dracut.img",
        &format!(
            "ip=dhcp root=iscsi:10.0.2.2::{port}:0:{target} rootfstype=squashfs ro \
             rd.iscsi.initiator=iqn.2024-01.org.s3lun:big rd.shell=0 rd.retry=30"
        ),
        Duration::from_secs(400),
    );
    eprintln!("{log}");
    assert!(
        log.contains("S3LUN-ROOT: marker s3lun-dracut-marker"),
        "{log}"
    );
    assert!(
        log.contains(&format!("S3LUN-ROOT: md5 {want_md5}")),
        "{log}"
    );
    check_kernel_log(&log);
    assert!(srv.alive());
}

/// Boot the guest and hand every console line to `on_line` as it comes (to act at
/// points of the guest's progress); return the whole console output.
fn boot_watching(
    assets: &Path,
    cmdline: &str,
    deadline: Duration,
    mut on_line: impl FnMut(&str),
) -> String {
    let mut child = qemu(assets, "initrd.gz", cmdline);
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut log = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                on_line(&line);
                log.push_str(&line);
                log.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    log
}

#[test]
fn io_goes_on_across_a_kill_and_a_drain_with_restarts() {
    let assets = assets();
    let dir = tempfile::tempdir().unwrap();
    let (img, want_md5) = squashfs_and_md5(dir.path());
    let target = "iqn.2023-06.csm.iscsi:restart";
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let advertise = format!("10.0.2.2:{port}");
    let lun = format!("0={}", img.display());
    let start = || {
        Server::start_raw(&[
            "serve",
            "--listen",
            &listen,
            "--advertise",
            &advertise,
            "--target-name",
            target,
            "--lun",
            &lun,
            "--drain-timeout",
            "10",
        ])
    };
    let mut srv = Some(start());
    let rounds = 24;
    let (mut killed, mut drained) = (None, None);
    let log = boot_watching(
        &assets,
        &format!(
            "rdinit=/restart-init s3lun.addr=10.0.2.2 s3lun.port={port} \
             s3lun.target={target} s3lun.rounds={rounds}"
        ),
        Duration::from_secs(400),
        |line| {
            // A crash after round 3, an operator's restart (drain) after round 12;
            // each time the target is back on the same port 5 s later.
            if line.contains("S3LUN-GUEST: round 3 ") && killed.is_none() {
                if let Some(s) = srv.as_mut() {
                    s.kill9();
                }
                std::thread::sleep(Duration::from_secs(5));
                srv = Some(start());
                killed = Some(Instant::now());
            }
            if line.contains("S3LUN-GUEST: round 12 ") && drained.is_none() {
                if let Some(mut s) = srv.take() {
                    let t = Instant::now();
                    s.signal("TERM");
                    while s.alive() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    drained = Some((t.elapsed(), s.exit_code()));
                    std::thread::sleep(Duration::from_secs(5).saturating_sub(t.elapsed()));
                }
                srv = Some(start());
            }
        },
    );
    eprintln!("{log}");
    assert!(killed.is_some(), "the guest never reached round 3:\n{log}");
    let (took, code) = drained.expect("the guest never reached round 12");
    assert_eq!(code, Some(0), "a drain exits 0");
    assert!(took < Duration::from_secs(12), "drain took {took:?}");
    check_rounds(&log, rounds, &want_md5);
    // The outages were real: the kernel saw the connection fail, and the drain's
    // logout request reached iscsid.
    assert!(log.contains("detected conn error"), "{log}");
    assert!(log.contains("Target requests logout"), "{log}");
    // One path: not even the SCSI layer may see a failed read.
    for bad in FILESYSTEM_ERRORS.iter().chain(&["I/O error"]) {
        assert!(!log.contains(bad), "kernel reported {bad:?}:\n{log}");
    }
}

/// One of two s3lun instances serving `img` as the same LUN (same identity, so one
/// WWID) under one target name, with its own ALUA port group and admin socket.
fn path_instance(dir: &Path, img: &Path, port: u16, group: u16) -> Server {
    let cfg = dir.join(format!("path-{group}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nadvertise = [\"10.0.2.2:{port}\"]\n\
             alua_port_group = {group}\ndrain_timeout_secs = 10\n\
             admin_socket = \"{}\"\n[[lun]]\npath = \"{}\"\nidentity = \"{PE_IDENTITY}\"\n",
            dir.join(format!("admin-{group}.sock")).display(),
            img.display()
        ),
    )
    .unwrap();
    Server::start_raw(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--target-name",
        "iqn.2023-06.csm.iscsi:multipath",
    ])
}

#[test]
fn multipath_rides_through_a_drain_a_restart_and_a_crash() {
    let assets = prepared("prepare-multipath.sh", "kernel-mpath");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, want_md5) = squashfs_and_md5(d);
    let (pa, pb) = (free_port(), free_port());
    let mut a = Some(path_instance(d, &img, pa, 1));
    let mut b = path_instance(d, &img, pb, 2);
    let rounds = 40;
    let mut drain: Option<std::thread::JoinHandle<(String, Duration)>> = None;
    let mut events = Vec::new();
    let log = boot_watching(
        &assets,
        &format!(
            "s3lun.addr=10.0.2.2 s3lun.port_a={pa} s3lun.port_b={pb} \
             s3lun.target=iqn.2023-06.csm.iscsi:multipath s3lun.rounds={rounds}"
        ),
        Duration::from_secs(500),
        |line| {
            // Drain A after round 4; start it again after round 16; kill B after 28.
            if line.contains("S3LUN-GUEST: round 4 ") && drain.is_none() {
                let sock = d.join("admin-1.sock");
                drain = Some(std::thread::spawn(move || {
                    let t = Instant::now();
                    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
                        .args(["admin", "--socket", sock.to_str().unwrap(), "drain"])
                        .output()
                        .expect("s3lun admin drain");
                    (
                        String::from_utf8_lossy(&out.stdout).trim().to_string(),
                        t.elapsed(),
                    )
                }));
                events.push("drained A");
            }
            if line.contains("S3LUN-GUEST: round 16 ") && events.len() == 1 {
                if let Some(mut old) = a.take() {
                    let t = Instant::now();
                    while old.alive() && t.elapsed() < Duration::from_secs(15) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    events.push(if old.exit_code() == Some(0) {
                        "A exited 0"
                    } else {
                        "A did not exit 0"
                    });
                }
                a = Some(path_instance(d, &img, pa, 1));
            }
            if line.contains("S3LUN-GUEST: round 28 ") && events.len() == 2 {
                b.kill9();
                events.push("killed B");
            }
        },
    );
    eprintln!("{log}");
    assert_eq!(events, ["drained A", "A exited 0", "killed B"], "{log}");
    let (answer, took) = drain.expect("drain").join().unwrap();
    assert_eq!(answer, "ok: drained");
    assert!(took < Duration::from_secs(11), "drain took {took:?}");
    check_rounds(&log, rounds, &want_md5);
    // One map of two paths behind the ALUA handler, both active at first.
    let ll: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("S3LUN-GUEST: ll "))
        .collect();
    assert!(
        ll.iter()
            .any(|l| l.starts_with(PE_WWID) && l.contains("LIO-ORG")),
        "{log}"
    );
    assert!(ll.iter().any(|l| l.contains("hwhandler='1 alua'")), "{log}");
    assert!(log.contains("Target requests logout"), "{log}");
    // What multipath saw between the events: A's path failed after the drain, both
    // paths active again after A's restart, B's path failed after the kill.
    let phases = multipath_phases(&log, &[4, 16, 28]);
    let failed = |p: &Vec<String>| p.iter().any(|s| s.contains("failed"));
    let both_up = |p: &Vec<String>| {
        p.iter()
            .any(|s| s.matches("active ready running").count() == 2)
    };
    assert!(failed(&phases[1]), "no failed path after the drain:\n{log}");
    assert!(both_up(&phases[2]), "A's path never came back:\n{log}");
    assert!(failed(&phases[3]), "no failed path after killing B:\n{log}");
    // Paths fail underneath (that is the point), the filesystem never sees it. A
    // failed path device itself (sdX) may report a read that udev or a path checker
    // made while it was offline: that is the path failing, not the filesystem.
    for line in log
        .lines()
        .filter(|l| !l.contains(" on dev sd") && !l.contains(", dev sd"))
    {
        for bad in FILESYSTEM_ERRORS {
            assert!(
                !line.contains(bad),
                "kernel reported {bad:?} ({line}):\n{log}"
            );
        }
    }
}

/// The guest's `multipath -ll` snapshots grouped by the round they followed: phase 0
/// before round `at[0]`, phase 1 from there to `at[1]`, and so on.
fn multipath_phases(log: &str, at: &[u32]) -> Vec<Vec<String>> {
    let mut phases = vec![Vec::new(); at.len() + 1];
    let (mut phase, mut current) = (0, String::new());
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("S3LUN-GUEST: round ") {
            let n: u32 = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if !current.is_empty() {
                phases[phase].push(std::mem::take(&mut current));
            }
            phase = at.iter().filter(|&&a| n > a).count();
        } else if let Some(ll) = line.strip_prefix("S3LUN-GUEST: ll ") {
            current.push_str(ll);
            current.push('\n');
        }
    }
    if !current.is_empty() {
        phases[phase].push(current);
    }
    phases
}
