//! ALUA states set at run time and the drain, from the initiator's side: REPORT
//! TARGET PORT GROUPS follows the state, each I_T nexus hears ASYMMETRIC ACCESS STATE
//! CHANGED once per LUN, each state refuses what SPC-4 says with its own sense; a
//! drain asks sessions to log out (Asynchronous Message, AsyncEvent 1), sends new
//! logins to the peer (libiscsi follows the redirect) or refuses them, is not ready
//! on /readyz, and exits 0 within its timeout.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::{read10, sense, Raw};
use common::{free_port, run, write_image, Server, TARGET};
use s3lun::pdu::Header;

fn admin(socket: &Path, words: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .arg("admin")
        .arg("--socket")
        .arg(socket)
        .args(words)
        .output()
        .expect("s3lun admin");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "s3lun admin {words:?}: {text}");
    text
}

/// Two LUNs, an admin socket; returns the server and the socket path.
fn target(dir: &Path, extra: &[&str]) -> (Server, PathBuf) {
    let (a, _) = write_image(dir, "a.img", 1 << 20, 1);
    let (b, _) = write_image(dir, "b.img", 1 << 20, 2);
    let sock = dir.join(format!("admin-{}.sock", free_port()));
    let (a, b) = (format!("0={}", a.display()), format!("1={}", b.display()));
    let mut args = vec![
        "--lun",
        &a,
        "--lun",
        &b,
        "--admin-socket",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), sock)
}

/// (status, (key, ASC, ASCQ)) of one command.
fn check(r: &mut Raw, lun: u64, cdb: &[u8], edtl: u32) -> (u8, (u8, u8, u8)) {
    let (_, st, seg) = r.command(lun, cdb, edtl);
    if st != 2 {
        return (st, (0, 0, 0));
    }
    let (key, asc) = sense(&seg);
    (st, (key, asc, seg[2 + 13]))
}

/// The asymmetric access state REPORT TARGET PORT GROUPS gives.
fn rtpg_state(r: &mut Raw) -> u8 {
    let (d, st, _) = r.command(0, &[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 256);
    assert_eq!(st, 0);
    d[4] & 0x0f
}

fn session(port: u16, tail: u16) -> Raw {
    let mut r = Raw::as_initiator(port, "iqn.2024-01.test:alua", tail);
    r.login_normal(TARGET, &[]);
    // Power-on attentions out of the way (TEST UNIT READY itself may be refused
    // by the state).
    for lun in [0, 1] {
        while check(&mut r, lun, &[0, 0, 0, 0, 0, 0], 0).1 .0 == 6 {}
    }
    r
}

#[test]
fn alua_states_are_reported_refused_as_spc4_says_and_announced_once() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, sock) = target(dir.path(), &[]);
    let mut s1 = session(srv.port, 1);
    let mut s2 = session(srv.port, 2);
    assert_eq!(rtpg_state(&mut s1), 0, "active/optimized at start");
    let read = read10(0, 8);
    let mode_sense = [0x1a, 0, 0x3f, 0, 192, 0];
    // (state, its code, READ's answer, MODE SENSE's answer)
    let cases = [
        ("standby", 2, (2, (2, 4, 0x0b)), (0, (0, 0, 0))),
        ("unavailable", 3, (2, (2, 4, 0x0c)), (2, (2, 4, 0x0c))),
        ("transitioning", 0xf, (2, (2, 4, 0x0a)), (2, (2, 4, 0x0a))),
        ("active-non-optimized", 1, (0, (0, 0, 0)), (0, (0, 0, 0))),
        ("active-optimized", 0, (0, (0, 0, 0)), (0, (0, 0, 0))),
    ];
    for (state, code, on_read, on_mode_sense) in cases {
        assert_eq!(admin(&sock, &["alua", state]), format!("ok: alua {state}"));
        for s in [&mut s1, &mut s2] {
            // Once per LUN of each I_T nexus, then the state's own answers.
            for lun in [0, 1] {
                assert_eq!(
                    check(s, lun, &read, 4096),
                    (2, (6, 0x2a, 0x06)),
                    "{state}: ASYMMETRIC ACCESS STATE CHANGED on LUN {lun}"
                );
            }
            assert_eq!(check(s, 0, &read, 4096), on_read, "{state}: READ");
            assert_eq!(check(s, 1, &read, 4096), on_read, "{state}: READ LUN 1");
            assert_eq!(
                check(s, 0, &mode_sense, 192),
                on_mode_sense,
                "{state}: MODE SENSE"
            );
            assert_eq!(
                check(s, 0, &[0x12, 0, 0, 0, 36, 0], 36).0,
                0,
                "{state}: INQUIRY"
            );
            assert_eq!(rtpg_state(s), code, "{state}: REPORT TARGET PORT GROUPS");
        }
    }
    // A session that logs in later starts in the current state, without an attention.
    admin(&sock, &["alua", "standby"]);
    let mut s3 = session(srv.port, 3);
    assert_eq!(check(&mut s3, 0, &read, 4096), (2, (2, 4, 0x0b)));
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args([
            "admin",
            "--socket",
            sock.to_str().unwrap(),
            "alua",
            "sideways",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown ALUA state"));
    assert_eq!(
        admin(&sock, &["state"]),
        "ok: alua standby, serving, 3 sessions"
    );
}

/// The next PDU that is not a NOP-In; answers pings on the way.
fn next_event(r: &mut Raw) -> Option<Header> {
    loop {
        let p = r.recv()?;
        match p.header {
            Header::NopIn(n) => r.answer_ping(&n),
            h => return Some(h),
        }
    }
}

fn http_status(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut t = String::new();
    let _ = s.read_to_string(&mut t);
    t.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_drain_asks_sessions_to_leave_redirects_new_logins_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // B: the peer, serving the same images with the same identities.
    let (peer, _) = target(d, &[]);
    let mport = free_port();
    let redirect = format!("127.0.0.1:{}", peer.port);
    let metrics = format!("127.0.0.1:{mport}");
    let (mut a, sock) = target(
        d,
        &[
            "--redirect-to",
            &redirect,
            "--drain-timeout",
            "20",
            "--metrics-listen",
            &metrics,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_status(mport, "/readyz") != "HTTP/1.1 200 OK" {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_status(mport, "/healthz"), "HTTP/1.1 200 OK");
    let mut s = session(a.port, 1);
    let started = Instant::now();
    let drain = {
        let sock = sock.clone();
        std::thread::spawn(move || admin(&sock, &["drain"]))
    };
    // The session is asked to log out within the drain timeout.
    let Some(Header::AsyncMessage(m)) = next_event(&mut s) else {
        panic!("no Asynchronous Message")
    };
    assert_eq!(m.event, 1, "AsyncEvent 1: logout requested");
    assert!(
        (15..=20).contains(&m.param3),
        "Parameter3: the time left, {}",
        m.param3
    );
    assert_eq!(
        http_status(mport, "/readyz"),
        "HTTP/1.1 503 Service Unavailable"
    );
    // A new normal login is redirected to the peer.
    let mut r = Raw::as_initiator(a.port, "iqn.2024-01.test:late", 9);
    let (resp, keys) = r.try_login(TARGET, &[]);
    assert_eq!(
        (resp.status_class, resp.status_detail),
        (1, 1),
        "target moved temporarily"
    );
    assert_eq!(
        common::raw::get(&keys, "TargetAddress"),
        Some(format!("{redirect},1").as_str())
    );
    // libiscsi follows it: discovery lists the peer, a normal login lands there.
    let ls = run("iscsi-ls", &["-s", &format!("iscsi://{}", a.addr)]);
    assert!(ls.contains(&redirect) && ls.contains("Lun:1"), "{ls}");
    let inq = run("iscsi-inq", &[&a.url(0)]);
    assert!(inq.contains("LIO-ORG"), "{inq}");
    // The old session heard the port group is now active/non-optimized (multipath
    // prefers other paths) and still reads; it logs out.
    let seen: Vec<_> = (0..3)
        .map(|_| check(&mut s, 0, &read10(0, 8), 4096))
        .collect();
    assert_eq!(seen[0], (2, (6, 0x2a, 0x06)), "{seen:?}");
    assert_eq!(seen[1..], [(0, (0, 0, 0)), (0, (0, 0, 0))], "{seen:?}");
    assert_eq!(rtpg_state(&mut s), 1, "active/non-optimized while draining");
    s.logout();
    let answer = drain.join().unwrap();
    assert_eq!(answer, "ok: drained");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.alive() {
        assert!(Instant::now() < deadline, "still running after the drain");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "drained before its timeout"
    );
    assert_eq!(a.exit_code(), Some(0));
}

#[test]
fn sigterm_drains_refuses_new_logins_and_exits_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = target(dir.path(), &["--drain-timeout", "4"]);
    // A session that never logs out.
    let mut s = session(a.port, 1);
    let started = Instant::now();
    a.signal("TERM");
    let Some(Header::AsyncMessage(m)) = next_event(&mut s) else {
        panic!("no Asynchronous Message")
    };
    assert_eq!(m.event, 1);
    assert!((1..=4).contains(&m.param3), "{}", m.param3);
    // No peer to send it to: service unavailable, the initiator retries later.
    let mut r = Raw::as_initiator(a.port, "iqn.2024-01.test:late", 9);
    let (resp, _) = r.try_login(TARGET, &[]);
    assert_eq!((resp.status_class, resp.status_detail), (3, 1));
    // The session is told the state changed (a node with one path keeps reading).
    let read = read10(0, 8);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(check(&mut s, 0, &read, 4096));
    }
    assert!(seen.contains(&(2, (6, 0x2a, 0x06))), "{seen:?}");
    while a.alive() {
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "drain outlived its timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "closed before the timeout"
    );
    assert_eq!(a.exit_code(), Some(0));
    s.expect_closed();
}
