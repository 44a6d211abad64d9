//! Stable LUN numbers across restarts (state file), numbers never reused, and live
//! changes on SIGHUP announced to open sessions with REPORTED LUNS DATA HAS CHANGED.

mod common;

use std::time::Duration;

use common::raw::{sense, Raw};
use common::{run, write_image, Server, TARGET};

fn config(dir: &std::path::Path, images: &[&str]) -> std::path::PathBuf {
    let mut text = format!("state_file = \"{}\"\n", dir.join("luns.json").display());
    for name in images {
        text.push_str(&format!(
            "[[lun]]\npath = \"{}\"\n",
            dir.join(name).display()
        ));
    }
    let p = dir.join("s3lun.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn capacity(srv: &Server, lun: u32) -> Option<u64> {
    let out = std::process::Command::new(common::tool("iscsi-readcapacity16"))
        .arg(srv.url(lun))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Total size:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn numbers_survive_restarts_and_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, size, seed) in [
        ("a.img", 1 << 20, 1),
        ("b.img", 2 << 20, 2),
        ("c.img", 3 << 20, 3),
    ] {
        write_image(dir.path(), name, size, seed);
    }
    let cfg = config(dir.path(), &["a.img", "b.img"]);
    {
        let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
        assert_eq!(capacity(&srv, 0), Some(1 << 20));
        assert_eq!(capacity(&srv, 1), Some(2 << 20));
    }
    // a.img is gone, c.img is new: b keeps 1, c does not get a's 0.
    let cfg = config(dir.path(), &["b.img", "c.img"]);
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(capacity(&srv, 1), Some(2 << 20));
    assert_eq!(capacity(&srv, 2), Some(3 << 20));
    assert_eq!(capacity(&srv, 0), None);
    let ls = run("iscsi-ls", &["-s", &format!("iscsi://{}", srv.addr)]);
    assert!(
        !ls.contains("Lun:0 ") && ls.contains("Lun:1 ") && ls.contains("Lun:2 "),
        "{ls}"
    );
}

#[test]
fn sighup_changes_are_announced_to_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (_, b) = write_image(dir.path(), "b.img", 1 << 20, 2);
    write_image(dir.path(), "d.img", 1 << 20, 4);
    let cfg = config(dir.path(), &["b.img"]);
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let (_, st, _) = r.command(0, &[0x00], 0);
    assert_eq!(st, 2, "power-on unit attention");
    let (_, st, _) = r.command(0, &[0x00], 0);
    assert_eq!(st, 0);
    // An unchanged reload is not an event.
    srv.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (_, st, _) = r.command(0, &[0x00], 0);
    assert_eq!(st, 0, "no unit attention when nothing changed");
    config(dir.path(), &["b.img", "d.img"]);
    srv.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (_, st, s) = r.command(0, &[0x00], 0);
    assert_eq!(
        (st, sense(&s)),
        (2, (6, 0x3f)),
        "REPORTED LUNS DATA HAS CHANGED"
    );
    let (luns, st, _) = r.command(0, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    assert_eq!(st, 0);
    assert_eq!(
        u32::from_be_bytes(luns[..4].try_into().unwrap()),
        16,
        "two LUNs now"
    );
    assert_eq!(&luns[16..18], &[0, 1]);
    // The session kept its LUN and its data.
    let (data, st, _) = r.command(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], 1024);
    assert_eq!(st, 0);
    assert_eq!(&data[..], &b[..1024]);
    // A reload that fails (missing image) keeps the current LUNs.
    config(dir.path(), &["b.img", "missing.img"]);
    srv.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (_, st, _) = r.command(1, &[0x00], 0);
    assert_eq!(
        st, 2,
        "LUN 1 reports its power-on unit attention: it is still there"
    );
    let (_, st, _) = r.command(1, &[0x00], 0);
    assert_eq!(st, 0);
}
