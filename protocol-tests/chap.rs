//! CHAP and initiator ACLs with libiscsi as the initiator: one-way and mutual CHAP,
//! hex and base64 secrets, discovery configured apart from normal sessions, and an
//! allow-list of initiator names.

mod common;

use std::process::Command;

use common::{tool, write_image, Server, TARGET};

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn inq(url: &str, env: &[(&str, &str)], extra: &[&str]) -> (bool, String) {
    let out = Command::new(tool("iscsi-inq"))
        .args(extra)
        .arg(url)
        .envs(env.iter().copied())
        .output()
        .expect("iscsi-inq");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && text.contains("DIRECT_ACCESS"), text)
}

fn start(dir: &std::path::Path, config: &str) -> Server {
    let (img, _) = write_image(dir, "chap.img", 1 << 20, 8);
    let cfg = dir.join("chap.toml");
    std::fs::write(
        &cfg,
        format!("{config}\n[[lun]]\npath = \"{}\"\n", img.display()),
    )
    .unwrap();
    // Everything s3lun logs, at its most verbose, goes to a file the tests search
    // for secrets.
    Server::start_logged(
        &["--config", cfg.to_str().unwrap()],
        "trace",
        &dir.join("s3lun.log"),
    )
}

/// No secret, in any encoding, appears in the log; the log did record the logins.
fn assert_secrets_not_logged(dir: &std::path::Path, secrets: &[&str]) {
    let log = std::fs::read_to_string(dir.join("s3lun.log")).unwrap();
    assert!(log.contains("login complete"), "trace log missing:\n{log}");
    assert!(log.contains("login failed"), "trace log missing:\n{log}");
    for s in secrets {
        for form in [s.to_string(), hex(s), hex(s).to_uppercase()] {
            assert!(!log.contains(&form), "secret {form:?} is in the log");
        }
    }
}

#[test]
fn one_way_and_mutual_chap() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(
        dir.path(),
        &format!(
            "[chap]\nuser = \"node1\"\nsecret = \"0x{}\"\ntarget_user = \"tgt\"\ntarget_secret = \"0b{}\"\n",
            hex("initiatorpass1"),
            "dGFyZ2V0cGFzczEyMw==" // base64 of "targetpass123"
        ),
    );
    let url = |cred: &str| format!("iscsi://{cred}@{}/{TARGET}/0", srv.addr);
    let plain = format!("iscsi://{}/{TARGET}/0", srv.addr);
    let (ok, out) = inq(&plain, &[], &[]);
    assert!(!ok, "login without CHAP must fail: {out}");
    assert!(out.contains("Authentication failure"), "{out}");
    let (ok, out) = inq(&url("node1%wrongpassword"), &[], &[]);
    assert!(!ok && out.contains("Authentication failure"), "{out}");
    let (ok, out) = inq(&url("node9%initiatorpass1"), &[], &[]);
    assert!(!ok, "unknown CHAP name must fail: {out}");
    let (ok, out) = inq(&url("node1%initiatorpass1"), &[], &[]);
    assert!(ok, "one-way CHAP: {out}");
    let mutual = [
        ("LIBISCSI_CHAP_TARGET_USERNAME", "tgt"),
        ("LIBISCSI_CHAP_TARGET_PASSWORD", "targetpass123"),
    ];
    let (ok, out) = inq(&url("node1%initiatorpass1"), &mutual, &[]);
    assert!(ok, "mutual CHAP: {out}");
    // The initiator checks our answer: a wrong target secret on its side fails.
    let wrong = [
        ("LIBISCSI_CHAP_TARGET_USERNAME", "tgt"),
        ("LIBISCSI_CHAP_TARGET_PASSWORD", "not-the-secret"),
    ];
    let (ok, out) = inq(&url("node1%initiatorpass1"), &wrong, &[]);
    assert!(!ok && out.contains("CHAP_R"), "{out}");
    // Discovery has no CHAP configured here: it stays open.
    let ls = common::run("iscsi-ls", &[&format!("iscsi://{}", srv.addr)]);
    assert!(ls.contains(TARGET), "{ls}");
    // The conformance suite runs through CHAP too.
    let out = Command::new(tool("iscsi-test-cu"))
        .args(["-t", "ALL.Inquiry", &url("node1%initiatorpass1")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Run Summary"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert_secrets_not_logged(
        dir.path(),
        &["initiatorpass1", "targetpass123", "dGFyZ2V0cGFzczEyMw=="],
    );
}

#[test]
fn discovery_chap_is_separate_and_acls_apply() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(
        dir.path(),
        "allowed_initiators = [\"iqn.2024-01.test:allowed\"]\n[discovery_chap]\nuser = \"disc\"\nsecret = \"discoverysecret\"\nsha256 = false\n",
    );
    let out = Command::new(tool("iscsi-ls"))
        .arg(format!("iscsi://{}", srv.addr))
        .output()
        .unwrap();
    assert!(!out.status.success(), "discovery without CHAP must fail");
    let disc = format!("iscsi://disc%discoverysecret@{}", srv.addr);
    let ls = common::run("iscsi-ls", &["-i", "iqn.2024-01.test:allowed", &disc]);
    assert!(ls.contains(TARGET), "{ls}");
    // An initiator the ACL refuses is told of no target (libiscsi's default name).
    let ls = common::run("iscsi-ls", &[&disc]);
    assert!(!ls.contains(TARGET), "{ls}");
    // Normal sessions need no CHAP here, but the ACL decides who gets in.
    let plain = format!("iscsi://{}/{TARGET}/0", srv.addr);
    let (ok, out) = inq(&plain, &[], &["-i", "iqn.2024-01.test:allowed"]);
    assert!(ok, "{out}");
    let (ok, out) = inq(&plain, &[], &["-i", "iqn.2024-01.test:stranger"]);
    assert!(
        !ok,
        "an initiator not on the allow-list must be refused: {out}"
    );
}
