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
    // A missing image is its own problem: the others stay, and it has no LUN.
    config(dir.path(), &["b.img", "missing.img", "d.img"]);
    srv.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (_, st, _) = r.command(1, &[0x00], 0);
    assert_eq!(
        st, 2,
        "LUN 1 reports its power-on unit attention: it is still there"
    );
    let (_, st, _) = r.command(1, &[0x00], 0);
    assert_eq!(st, 0);
    let (luns, st, _) = r.command(0, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    assert_eq!(st, 0);
    assert_eq!(
        u32::from_be_bytes(luns[..4].try_into().unwrap()),
        16,
        "still two LUNs: the missing image has none"
    );
    let (data, st, _) = r.command(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], 1024);
    assert_eq!(st, 0);
    assert_eq!(&data[..], &b[..1024]);
}

/// A LUN number as libiscsi writes and reads it: flat space addressing from 256.
fn flat(n: u32) -> u32 {
    if n < 256 {
        n
    } else {
        0x4000 | n
    }
}

/// REPORT LUNS at catalog scale: 3,000 LUNs, listed whole by libiscsi's iscsi-ls
/// (which asks again with the length the first answer gives) and each readable.
#[test]
fn report_luns_lists_three_thousand_luns() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let mut text = String::new();
    for i in 0..n {
        let p = dir.path().join(format!("img{i:04}.img"));
        std::fs::write(&p, common::pattern(4096, i as u64)).unwrap();
        text.push_str(&format!("[[lun]]\npath = \"{}\"\n", p.display()));
    }
    let cfg = dir.path().join("s3lun.toml");
    std::fs::write(&cfg, text).unwrap();
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    // libiscsi prints the LUN field's first level as it is: numbers from 256 on in
    // flat space addressing (SAM-5 4.7.7), 0x4000 | n.
    let listed = common::report_luns(&srv);
    let want: Vec<u32> = (0..n as u32).map(flat).collect();
    assert!(
        listed == want,
        "{} LUNs listed, first mismatch at {:?}",
        listed.len(),
        listed.iter().zip(&want).position(|(a, b)| a != b)
    );
    // The last one answers like the first (addressed the same way).
    let url = format!("iscsi://{}/{}/{}", srv.addr, TARGET, flat(n as u32 - 1));
    let inq = run("iscsi-inq", &[&url]);
    assert!(inq.contains("DIRECT_ACCESS"), "{inq}");
}

/// The end of the LUN numbers: a state file whose numbers 0..=16379 are all retired
/// (never reused) leaves 4; six catalog images come; four are served as LUNs
/// 16380..=16383 (REPORT LUNS and reads work at the top of the range), two are not,
/// which one log line and `s3lun_catalog_unnumbered_images` say; nothing else moves.
#[test]
fn past_the_last_lun_number_images_wait_and_nothing_else_moves() {
    use common::moto::{metric, Moto};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let mut images = Vec::new();
    for i in 0..6u64 {
        let data = common::pattern(8192, 40 + i);
        moto.put(d, "boot-images", &format!("PE/pe{i}.squashfs"), &data, &[]);
        images.push(data);
    }
    let retired: Vec<u64> = (0..=16379).collect();
    let state = d.join("luns.json");
    std::fs::write(
        &state,
        serde_json::json!({"assigned": {}, "retired": retired}).to_string(),
    )
    .unwrap();
    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_file = \"{}\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[cache]\ndir = \"{}\"\n[catalog]\nprefixes = [\"s3://boot-images/PE/\"]\nrefresh_secs = 1\n",
            state.display(),
            moto.endpoint,
            d.join("cache").display()
        ),
    )
    .unwrap();
    let log = d.join("log");
    let mport = common::free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let srv = Server::start_logged(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--metrics-listen",
            &maddr,
        ],
        "warn",
        &log,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(mport, "s3lun_luns") != 4 {
        assert!(std::time::Instant::now() < deadline, "LUNs never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(mport, "s3lun_catalog_unnumbered_images"), 2);
    let luns = common::report_luns(&srv);
    let top: Vec<u32> = (16380..=16383).map(flat).collect();
    assert_eq!(luns, top);
    let luns: Vec<u32> = luns.iter().map(|l| l & 0x3fff).collect();
    // Reads at the top of the range: the first four images in name order.
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    for (i, lun) in luns.iter().enumerate() {
        let addressed = u64::from(flat(*lun));
        let _ = r.command(addressed, &[0x00], 0);
        let (data, st, _) = r.command(addressed, &common::raw::read10(0, 16), 8192);
        assert_eq!(st, 0, "LUN {lun}");
        assert_eq!(data, images[i], "LUN {lun}");
    }
    // A few scans later: the same four, the same two waiting, and the log says so
    // once per scan at most (rate-limited), not once per image per command.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(common::report_luns(&srv), top);
    assert_eq!(metric(mport, "s3lun_catalog_unnumbered_images"), 2);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("no LUN number left"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("no LUN number left"))
            .count()
            <= 10,
        "{text}"
    );
}
