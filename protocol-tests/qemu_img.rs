//! qemu's iSCSI block driver (libiscsi) reading whole LUNs: the bytes must be the
//! image's, then zeros up to the block boundary.

mod common;

use std::process::Command;

use common::{make_squashfs, tool, write_image, Server};

fn convert(url: &str, out: &std::path::Path) {
    assert!(common::convert(url, out), "qemu-img convert {url} failed");
}

fn check(out: &std::path::Path, image: &[u8]) {
    common::check_image(out, image)
}

#[test]
fn converts_an_odd_sized_image_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (a, data) = write_image(dir.path(), "odd.img", 5 * 1024 * 1024 + 1234, 11);
    let srv = Server::start(&["--lun", a.to_str().unwrap()]);
    let out = dir.path().join("out.raw");
    convert(&srv.url(0), &out);
    check(&out, &data);
}

#[test]
fn converts_a_real_squashfs() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = make_squashfs(dir.path());
    let (other, other_data) = write_image(dir.path(), "other.img", 300_001, 12);
    let srv = Server::start(&[
        "--lun",
        img.to_str().unwrap(),
        "--lun",
        other.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.raw");
    convert(&srv.url(0), &out);
    check(&out, &data);
    // The copy is a valid squashfs with our marker in it.
    let listing = Command::new(tool("unsquashfs"))
        .args(["-cat", out.to_str().unwrap(), "etc/marker"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "s3lun-squashfs-marker\n"
    );
    let out2 = dir.path().join("out2.raw");
    convert(&srv.url(1), &out2);
    check(&out2, &other_data);
}

#[test]
fn converts_the_builtin_demo() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&["--demo"]);
    let out = dir.path().join("demo.raw");
    convert(&srv.url(0), &out);
    let listing = Command::new(tool("unsquashfs"))
        .args(["-cat", out.to_str().unwrap(), "marker"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "s3lun-demo-marker\n"
    );
}
