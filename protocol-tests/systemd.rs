//! The systemd notify protocol against a real NOTIFY_SOCKET: READY=1 arrives only
//! when logins already work, STOPPING=1 when a drain starts.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::raw::Raw;
use common::{free_port, write_image, TARGET};

#[test]
fn ready_once_logins_work_and_stopping_at_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write_image(dir.path(), "a.img", 1 << 20, 1);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--target-name", TARGET, "--lun", img.to_str().unwrap()])
        .args(["--drain-timeout", "3"])
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.starts_with("READY=1\n"), "{msg}");
    assert!(msg.contains("STATUS=serving 1 LUNs"), "{msg}");
    // Ready means a login works now, with no retry.
    let mut r = Raw::connect(port);
    r.login_normal(TARGET, &[]);
    drop(r);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.starts_with("STOPPING=1"), "{msg}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/s3lun.service"
    ))
    .unwrap();
    // Verified against the binary this build made, wherever it is.
    let unit = unit.replace("/usr/bin/s3lun", env!("CARGO_BIN_EXE_s3lun"));
    let path = dir.path().join("s3lun.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(common::tool("systemd-analyze"))
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
