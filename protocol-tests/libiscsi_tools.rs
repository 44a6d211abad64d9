//! The target as libiscsi's command-line tools see it: discovery and LUN listing,
//! standard INQUIRY and every VPD page, READ CAPACITY(16).

mod common;

use common::{run, write_image, Server, TARGET};

#[test]
fn iscsi_ls_lists_target_and_luns() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_image(dir.path(), "a.img", 1_000_003, 1);
    let (b, _) = write_image(dir.path(), "b.img", 4 * 1024 * 1024, 2);
    let srv = Server::start(&[
        "--lun",
        a.to_str().unwrap(),
        "--lun",
        &format!("7={}", b.to_str().unwrap()),
    ]);
    let out = run("iscsi-ls", &["-s", &format!("iscsi://{}", srv.addr)]);
    assert!(
        out.contains(&format!("Target:{TARGET} Portal:{},1", srv.addr)),
        "{out}"
    );
    assert!(out.contains("Lun:0"), "{out}");
    assert!(out.contains("Lun:7"), "{out}");
    assert_eq!(out.matches("Type:DIRECT_ACCESS").count(), 2, "{out}");
}

#[test]
fn send_targets_advertises_the_configured_address() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_image(dir.path(), "a.img", 8192, 1);
    let srv = Server::start(&[
        "--lun",
        a.to_str().unwrap(),
        "--advertise",
        "192.0.2.10:3260",
    ]);
    let out = run("iscsi-ls", &[&format!("iscsi://{}", srv.addr)]);
    assert!(
        out.contains(&format!("Target:{TARGET} Portal:192.0.2.10:3260,1")),
        "{out}"
    );
}

#[test]
fn inquiry_standard_and_vpd_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_image(dir.path(), "a.img", 65536, 3);
    let srv = Server::start(&["--lun", a.to_str().unwrap()]);
    let url = srv.url(0);
    let std_page = run("iscsi-inq", &[&url]);
    for want in [
        "Peripheral Device Type:DIRECT_ACCESS",
        "Vendor:LIO-ORG",
        "TPGS:1",
        "CmdQue:1",
        "Version Descriptor:0960 iSCSI",
    ] {
        assert!(std_page.contains(want), "missing {want:?} in\n{std_page}");
    }
    let pages = run("iscsi-inq", &["-e", "1", "-c", "0", &url]);
    for want in ["0x80", "0x83", "0xb0", "0xb1", "0xb2"] {
        assert!(pages.contains(&format!("Page:{want}")), "{pages}");
    }
    let serial = run("iscsi-inq", &["-e", "1", "-c", "128", &url]);
    assert!(serial.contains("Unit Serial Number:["), "{serial}");
    let ident = run("iscsi-inq", &["-e", "1", "-c", "131", &url]);
    for want in [
        "Designator Type:(3) NAA",
        "Designator Type:(5) TARGET_PORT_GROUP",
        "Designator Type:(4) RELATIVE_TARGET_PORT",
        &format!("Designator:[{TARGET}]"),
    ] {
        assert!(ident.contains(want), "missing {want:?} in\n{ident}");
    }
    let limits = run("iscsi-inq", &["-e", "1", "-c", "176", &url]);
    assert!(limits.contains("maximum transfer length:8192"), "{limits}");
    let chars = run("iscsi-inq", &["-e", "1", "-c", "177", &url]);
    assert!(chars.contains("Medium Rotation Rate:1"), "{chars}");
    let prov = run("iscsi-inq", &["-e", "1", "-c", "178", &url]);
    assert!(prov.contains("lbpu:0"), "{prov}");
}

#[test]
fn identity_follows_the_configured_string() {
    // The PE example from DESIGN.md: LIO would give this LUN WWID
    // 36001405de4cc04e7dacfb9ada0a6b4cc.
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_image(dir.path(), "pe.img", 8192, 5);
    let cfg = dir.path().join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[lun]]\npath = \"{}\"\nidentity = \"s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs\"\n",
            a.display()
        ),
    )
    .unwrap();
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    let serial = run("iscsi-inq", &["-e", "1", "-c", "128", &srv.url(0)]);
    assert!(serial.contains("[de4cc04e7dacfb9ada0a6b4cc"), "{serial}");
    let std_page = run("iscsi-inq", &[&srv.url(0)]);
    assert!(std_page.contains("Product:de4cc04e7dacfb9"), "{std_page}");
}

#[test]
fn read_capacity16_rounds_up_to_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_image(dir.path(), "a.img", 1_000_003, 4);
    let srv = Server::start(&["--lun", a.to_str().unwrap()]);
    let out = run("iscsi-readcapacity16", &[&srv.url(0)]);
    // ceil(1000003 / 512) = 1954 blocks: last LBA 1953.
    assert!(out.contains("RETURNED LOGICAL BLOCK ADDRESS:1953"), "{out}");
    assert!(out.contains("LOGICAL BLOCK LENGTH IN BYTES:512"), "{out}");
    assert!(out.contains("Total size:1000448"), "{out}");
}
