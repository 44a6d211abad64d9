//! Limits and hostile or broken initiators over real sockets: session and connection
//! limits answered "out of resources", the idle timeout, discovery hidden by the ACL,
//! initiators that vanish mid Data-In or stop reading, and a load of 500 concurrent
//! sessions mixed with malformed connections, with every byte checked and RSS printed.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::raw::{get, read10, Raw};
use common::{serve_image, status_kib, write_image, Server, TARGET};
use s3lun::pdu::*;

const MIB: usize = 1 << 20;

fn raw_as(port: u16, name: &str, isid_tail: u16) -> Raw {
    Raw::as_initiator(port, name, isid_tail)
}

/// A normal login's status (class, detail).
fn login_status(r: &mut Raw) -> (u8, u8) {
    let (resp, _) = r.try_login(TARGET, &[]);
    (resp.status_class, resp.status_detail)
}

fn fresh_session(port: u16, image: &[u8]) {
    let mut r = raw_as(port, "iqn.2024-01.test:checker", 0x7777);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    r.read_checked(image, 3, 9);
}

const OUT_OF_RESOURCES: (u8, u8) = (3, 2);

#[test]
fn session_limits_answer_out_of_resources() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = serve_image(
        dir.path(),
        MIB,
        &["--max-sessions", "3", "--max-sessions-per-initiator", "2"],
    );
    let mut a1 = raw_as(srv.port, "iqn.2024-01.test:a", 1);
    let mut a2 = raw_as(srv.port, "iqn.2024-01.test:a", 2);
    assert_eq!(login_status(&mut a1), (0, 0));
    assert_eq!(login_status(&mut a2), (0, 0));
    let mut a3 = raw_as(srv.port, "iqn.2024-01.test:a", 3);
    assert_eq!(login_status(&mut a3), OUT_OF_RESOURCES, "per initiator");
    a3.expect_closed();
    // Reinstating an existing ISID is not a new session.
    let mut a2b = raw_as(srv.port, "iqn.2024-01.test:a", 2);
    assert_eq!(login_status(&mut a2b), (0, 0), "reinstatement");
    a2.expect_closed();
    let mut b1 = raw_as(srv.port, "iqn.2024-01.test:b", 1);
    assert_eq!(login_status(&mut b1), (0, 0));
    let mut c1 = raw_as(srv.port, "iqn.2024-01.test:c", 1);
    assert_eq!(login_status(&mut c1), OUT_OF_RESOURCES, "in total");
    // A logout frees the slot.
    assert_eq!(a1.logout(), 0);
    a1.expect_closed();
    std::thread::sleep(Duration::from_millis(200));
    let mut c2 = raw_as(srv.port, "iqn.2024-01.test:c", 2);
    assert_eq!(login_status(&mut c2), (0, 0));
    let _ = c2.command(0, &[0x00], 0);
    c2.read_checked(&image, 0, 8);
}

#[test]
fn connection_limits_refuse_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = serve_image(dir.path(), MIB, &["--max-connections-per-address", "2"]);
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Over the limit: the login is answered "out of resources" and the connection closed.
    let mut over = raw_as(srv.port, "iqn.2024-01.test:over", 1);
    assert_eq!(login_status(&mut over), OUT_OF_RESOURCES);
    over.expect_closed();
    drop(over);
    // Twice over: closed before a byte is read.
    let extra: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut flood = Raw::connect(srv.port);
    flood.expect_closed();
    drop(extra);
    drop(_held);
    std::thread::sleep(Duration::from_millis(300));
    fresh_session(srv.port, &image);
}

#[test]
fn idle_sessions_are_closed_and_nops_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = serve_image(
        dir.path(),
        MIB,
        &["--idle-timeout", "2", "--nop-interval", "0"],
    );
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    let t = Instant::now();
    // A busy initiator is not idle.
    while t.elapsed() < Duration::from_secs(3) {
        r.read_checked(&image, 1, 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    // NOP-Outs alone do not keep the session.
    let t = Instant::now();
    loop {
        let itt = r.next_itt();
        let h = Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: r.cmd_sn,
            exp_stat_sn: r.exp_stat_sn,
        });
        let sent = r.s.write_all(&framing::encode_to_vec(&h, &[], &r.cfg));
        if sent.is_err() || r.recv().is_none() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(8), "never closed");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    fresh_session(srv.port, &image);
}

#[test]
fn discovery_hides_the_target_from_initiators_the_acl_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write_image(dir.path(), "img", MIB, 72);
    let cfg = dir.path().join("acl.toml");
    std::fs::write(
        &cfg,
        format!(
            "allowed_initiators = [\"iqn.2024-01.test:allowed\"]\n[[lun]]\npath = \"{}\"\n",
            img.display()
        ),
    )
    .unwrap();
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    let discover = |name: &str| {
        let mut r = raw_as(srv.port, name, 1);
        assert_eq!(r.login_discovery().0, 0);
        r.text_request(&[("SendTargets", "All")])
    };
    let seen = discover("iqn.2024-01.test:allowed");
    assert_eq!(get(&seen, "TargetName"), Some(TARGET));
    let hidden = discover("iqn.2024-01.test:stranger");
    assert!(hidden.is_empty(), "{hidden:?}");
    let mut r = raw_as(srv.port, "iqn.2024-01.test:stranger", 2);
    assert_eq!(login_status(&mut r), (2, 2), "forbidden");
    // libiscsi's discovery sees the same.
    let ls = common::run(
        "iscsi-ls",
        &[
            "-i",
            "iqn.2024-01.test:stranger",
            &format!("iscsi://{}", srv.addr),
        ],
    );
    assert!(!ls.contains(TARGET), "{ls}");
}

#[test]
fn initiators_vanishing_mid_data_in_harm_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = serve_image(dir.path(), 16 * MIB, &[]);
    let mut steady = raw_as(srv.port, "iqn.2024-01.test:steady", 1);
    steady.login_normal(TARGET, &[]);
    let _ = steady.command(0, &[0x00], 0);
    for i in 0..20u16 {
        let mut r = raw_as(srv.port, "iqn.2024-01.test:vanish", i);
        r.login_normal(TARGET, &[]);
        let _ = r.command(0, &[0x00], 0);
        // 4 MiB (the most one command may ask) asked, a few KiB taken, then gone
        // (half of them with a shutdown first).
        r.scsi(0, &read10(0, 8192), 4 * MIB as u32, true, false, true, &[]);
        let mut buf = vec![0u8; 4096 * (1 + usize::from(i))];
        r.s.read_exact(&mut buf).unwrap();
        if i % 2 == 0 {
            let _ = r.s.shutdown(Shutdown::Both);
        }
        drop(r);
        steady.read_checked(&image, u32::from(i) * 100, 64);
    }
    fresh_session(srv.port, &image);
}

#[test]
fn a_reader_that_stops_reading_is_held_back_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = serve_image(dir.path(), 64 * MIB, &[]);
    let mut slow = raw_as(srv.port, "iqn.2024-01.test:slow", 1);
    slow.login_normal(TARGET, &[]);
    let _ = slow.command(0, &[0x00], 0);
    let anon_before = status_kib(srv.pid(), "RssAnon:");
    // 64 reads of 1 MiB queued, none of the answers read for a while.
    let itts: Vec<u32> = (0..64u32)
        .map(|i| {
            slow.scsi(
                0,
                &read10(i * 2048, 2048),
                MIB as u32,
                true,
                false,
                true,
                &[],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut other = raw_as(srv.port, "iqn.2024-01.test:other", 1);
    other.login_normal(TARGET, &[]);
    let _ = other.command(0, &[0x00], 0);
    let t = Instant::now();
    for i in 0..32 {
        other.read_checked(&image, i * 4096, 256);
    }
    let others_took = t.elapsed();
    let anon_after = status_kib(srv.pid(), "RssAnon:");
    eprintln!(
        "slow reader: RssAnon {anon_before} kB -> {anon_after} kB with 64 MiB unread; 32 reads of another session took {others_took:?}"
    );
    assert!(
        anon_after < anon_before + 16 * 1024,
        "unread Data-In is buffered: {anon_before} -> {anon_after} kB"
    );
    assert!(others_took < Duration::from_secs(5), "{others_took:?}");
    // Once it reads again, everything arrives, byte-exact and in order.
    for (i, itt) in itts.into_iter().enumerate() {
        let (d, st, _) = slow.collect(itt);
        assert_eq!(st, 0);
        assert!(d[..] == image[i * MIB..(i + 1) * MIB], "read {i}");
    }
}

/// One malformed connection: garbage, a bad opcode after login, an oversized
/// segment or a truncated header, chosen by `kind`.
fn malformed(port: u16, kind: usize, n: u16) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    match kind % 3 {
        0 => {
            let junk: Vec<u8> = (0..200u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let _ = s.write_all(&junk);
        }
        1 => {
            let mut r = raw_as(port, "iqn.2024-01.test:bad", n);
            r.login_normal(TARGET, &[]);
            let mut bhs = [0u8; 48];
            bhs[0] = 0x3e; // no such opcode
            r.send_raw(&bhs);
            let _ = r.recv();
            // A data segment far over what was declared.
            bhs[0] = 0x00;
            bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xf0]);
            r.send_raw(&bhs);
            let _ = r.recv();
        }
        _ => {
            let _ = s.write_all(&[0x43, 0x87, 0, 0, 0, 0]);
            let _ = s.shutdown(Shutdown::Write);
        }
    }
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

#[test]
fn five_hundred_sessions_with_malformed_neighbours() {
    const SESSIONS: usize = 500;
    const BAD: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = serve_image(
        dir.path(),
        32 * MIB,
        &["--max-connections-per-address", "2000"],
    );
    let image = Arc::new(image);
    let port = srv.port;
    let t = Instant::now();
    let all_in = Arc::new(Barrier::new(SESSIONS + 1));
    let mut threads = Vec::new();
    for n in 0..SESSIONS {
        let image = Arc::clone(&image);
        let all_in = Arc::clone(&all_in);
        threads.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut r = raw_as(port, &format!("iqn.2024-01.load:n{n}"), n as u16);
                    r.s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    r.login_normal(TARGET, &[]);
                    all_in.wait();
                    let _ = r.command(0, &[0x00], 0);
                    for k in 0..4u32 {
                        let lba = ((n as u32).wrapping_mul(7919) + k * 104_729) % (32 * 2048 - 128);
                        r.read_checked(&image, lba, 128);
                    }
                    assert_eq!(r.logout(), 0);
                })
                .unwrap(),
        );
    }
    let bad: Vec<_> = (0..BAD)
        .map(|k| std::thread::spawn(move || malformed(port, k, k as u16)))
        .collect();
    all_in.wait();
    let logged_in = t.elapsed();
    let peak_sessions_rss = status_kib(srv.pid(), "VmRSS:");
    for th in threads {
        th.join().expect("a session failed");
    }
    for th in bad {
        th.join().unwrap();
    }
    let hwm = status_kib(srv.pid(), "VmHWM:");
    let anon = status_kib(srv.pid(), "RssAnon:");
    eprintln!(
        "load: {SESSIONS} sessions logged in at once after {logged_in:?}, all done after {:?}, {BAD} malformed connections; s3lun RSS {peak_sessions_rss} kB with all in, peak {hwm} kB, anon now {anon} kB",
        t.elapsed()
    );
    assert!(hwm < 512 * 1024, "RSS peak {hwm} kB");
    fresh_session(port, &image);
}
