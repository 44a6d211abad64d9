//! Strangers on the management network, as RFC 7143 and the operator's checklist
//! see them: a login that has not authenticated never closes or reinstates a
//! session, never holds a session slot, and a flood of silent connections or
//! half-finished logins never locks a legitimate login out; the HTTP listener's
//! health answers whatever its other clients do; `/status` and the admin socket
//! stay the operator's; a drain's redirect is told only to initiators the ACL lets
//! in.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::raw::{Bystander, Raw};
use common::{free_port, status_kib, write_image, Server, TARGET};

const VICTIM: &str = "iqn.2024-01.test:victim";
const SECRET: &[u8] = b"a-secret-of-16-b";

/// Seconds a flood lasts (the acceptance asks for a minute).
fn flood_secs() -> u64 {
    std::env::var("S3LUN_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// Room for thousands of sockets in this process.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A TCP connection from `from` (any 127/8 address is this machine's).
fn connect_from(from: IpAddr, port: u16) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(from, 0).into()).ok()?;
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .ok()?;
    Some(sock.into())
}

fn config(dir: &Path, extra: &str) -> (std::path::PathBuf, Vec<u8>) {
    let (img, image) = write_image(dir, "access.img", 1 << 20, 31);
    let cfg = dir.join("access.toml");
    std::fs::write(
        &cfg,
        format!("{extra}\n[[lun]]\npath = \"{}\"\n", img.display()),
    )
    .unwrap();
    (cfg, image)
}

#[test]
fn only_an_authenticated_login_reinstates_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, image) = config(
        dir.path(),
        "[chap]\nuser = \"node\"\nsecret = \"a-secret-of-16-b\"\n",
    );
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    let mut victim = Raw::as_initiator(srv.port, VICTIM, 7);
    victim.login_chap(TARGET, "node", SECRET);
    let mut b = Bystander::ready(victim, &image);
    let t = Instant::now();
    let mut tries = [0u32; 3];
    while t.elapsed() < Duration::from_secs(flood_secs()) {
        // A Discovery login with the session's name and ISID (discovery needs no
        // CHAP here): it completes, and must not touch the Normal session.
        let mut d = Raw::as_initiator(srv.port, VICTIM, 7);
        assert_eq!(d.login_discovery(), (0, 0), "discovery is open");
        drop(d);
        tries[0] += 1;
        // A Normal login without CHAP, and one with the wrong secret.
        let mut n = Raw::as_initiator(srv.port, VICTIM, 7);
        let (r, _) = n.try_login(TARGET, &[]);
        assert_eq!(r.status_class, 2, "a Normal login without CHAP is refused");
        tries[1] += 1;
        let mut w = Raw::as_initiator(srv.port, VICTIM, 7);
        assert_eq!(w.try_login_chap(TARGET, "node", b"not-the-secret!!").0, 2);
        tries[2] += 1;
        b.read();
    }
    eprintln!(
        "{tries:?} discovery, CHAP-less and wrong-secret logins with the victim's name and ISID; it kept reading"
    );
    // The same initiator, authenticated, with the same ISID: that reinstates it.
    let mut again = Raw::as_initiator(srv.port, VICTIM, 7);
    again.login_chap(TARGET, "node", SECRET);
    b.raw.expect_closed();
    Bystander::ready(again, &image).read();
}

/// RSS of the target, in kB.
fn rss(srv: &Server) -> u64 {
    status_kib(srv.pid(), "VmRSS:")
}

#[test]
fn floods_of_strangers_never_lock_out_a_login() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, image) = config(
        dir.path(),
        "[chap]\nuser = \"node\"\nsecret = \"a-secret-of-16-b\"\n",
    );
    let mport = free_port();
    let metrics = format!("127.0.0.1:{mport}");
    let srv = Server::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    let port = srv.port;
    // Warm: one session in and out, so the baseline holds what any session costs.
    let mut w = Raw::as_initiator(port, "iqn.2024-01.test:warm", 1);
    w.login_chap(TARGET, "node", SECRET);
    drop(w);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss(&srv);
    let mut after = Vec::new();
    for round in 0..3 {
        // 5,000 silent connections from 20 addresses, and 200 logins stopped
        // half-way (CHAP chosen, never answered) from 4 more.
        let mut held: Vec<TcpStream> = Vec::new();
        for i in 0..5000u32 {
            let from = IpAddr::from([127, 0, 1, 2 + (i % 20) as u8]);
            if let Some(s) = connect_from(from, port) {
                held.push(s);
            }
        }
        let mut half = Vec::new();
        for i in 0..200u16 {
            let from = IpAddr::from([127, 0, 2, 2 + (i % 4) as u8]);
            let Some(s) = connect_from(from, port) else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = Raw::from_stream(s, &format!("iqn.2024-01.flood:h{i}"), i);
            let name = format!("iqn.2024-01.flood:h{i}");
            let _ = r.try_login_step(&[
                ("InitiatorName", &name),
                ("SessionType", "Normal"),
                ("TargetName", TARGET),
                ("AuthMethod", "CHAP"),
            ]);
            half.push(r);
        }
        // A legitimate login from its own address, timed.
        let t = Instant::now();
        let mut ok = Raw::as_initiator(port, "iqn.2024-01.test:legit", 2);
        ok.login_chap(TARGET, "node", SECRET);
        let took = t.elapsed();
        let mut b = Bystander::ready(ok, &image);
        b.read();
        let peak = rss(&srv);
        let unauth = common::moto::metric(mport, "s3lun_unauthenticated_connections");
        let evicted = common::moto::metric(mport, "s3lun_unauthenticated_evicted_total");
        eprintln!(
            "round {round}: {} silent + {} half logins held; legit CHAP login in {took:?}; RSS {baseline} -> {peak} kB; {unauth} unauthenticated open, {evicted} evicted so far",
            held.len(),
            half.len()
        );
        assert!(
            took < Duration::from_secs(1),
            "a legitimate login took {took:?}"
        );
        assert!(unauth <= 1024, "the unauthenticated budget holds: {unauth}");
        drop(held);
        drop(half);
        assert_eq!(b.raw.logout(), 0);
        // Everything closed: the target gives back what the flood took.
        std::thread::sleep(Duration::from_secs(3));
        after.push(rss(&srv));
    }
    eprintln!("RSS baseline {baseline} kB, after each flood {after:?} kB");
    let last = *after.last().unwrap();
    assert!(
        last <= baseline + 48 * 1024,
        "RSS {last} kB after three floods, from {baseline} kB"
    );
    assert!(
        last <= after[0] + 16 * 1024,
        "RSS grows with each flood: {after:?}"
    );
}

/// One HTTP GET on a fresh connection: (status line, time to the answer).
fn timed_get(port: u16, path: &str) -> (String, Duration) {
    let t = Instant::now();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (String::new(), t.elapsed());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let line = text.lines().next().unwrap_or("").to_string();
    (line, t.elapsed())
}

#[test]
fn readyz_answers_whatever_other_http_clients_do() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config(dir.path(), "");
    let (_srv, mport) = Server::start_config(&cfg);
    // 800 idle connections and 200 slow-loris ones (a header line, then a byte a
    // second, never the end of the headers).
    let mut idle: Vec<TcpStream> = (0..800)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", mport)).ok())
        .collect();
    let mut loris: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", mport)).ok())
        .collect();
    for s in &mut loris {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
    }
    let mut answered = 0;
    let mut slow = Vec::new();
    let tries = 30;
    for i in 0..tries {
        for s in &mut loris {
            let _ = s.write_all(b"X");
        }
        // The strangers come back as fast as they are closed.
        while idle.len() < 800 {
            match TcpStream::connect(("127.0.0.1", mport)) {
                Ok(s) => idle.push(s),
                Err(_) => break,
            }
        }
        let (line, took) = timed_get(mport, "/readyz");
        if line.contains("200") && took < Duration::from_millis(100) {
            answered += 1;
        } else {
            slow.push((i, line, took));
        }
        std::thread::sleep(Duration::from_millis(1000));
        // Closed ones are dropped, to be opened again.
        idle.retain(|s| {
            let mut b = [0u8; 1];
            s.set_nonblocking(true).is_ok() && matches!(s.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
    }
    eprintln!("/readyz: {answered} of {tries} within 100 ms, with 1,000 idle and slow clients; misses: {slow:?}");
    assert!(
        answered * 100 >= tries * 95,
        "{answered} of {tries} answered within 100 ms: {slow:?}"
    );
}

#[test]
fn status_is_for_loopback_and_the_admin_socket_for_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config(dir.path(), "");
    // A peer that is not loopback: an address on a dummy interface, where the
    // machine lets the test make one (root in a network namespace of its own).
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let dummy = ip(&["link", "add", "s3lun-t0", "type", "dummy"])
        && ip(&["addr", "add", "10.254.99.1/32", "dev", "s3lun-t0"])
        && ip(&["link", "set", "s3lun-t0", "up"]);
    let mport = free_port();
    let listen = format!("0.0.0.0:{mport}");
    let srv = Server::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--metrics-listen",
        &listen,
    ]);
    let (code, _) = common::http_get(mport, "/status");
    assert_eq!(code, 200, "loopback reads /status");
    if dummy {
        let get = |path: &str| {
            let from: IpAddr = [10, 254, 99, 1].into();
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::new(from, 0).into()).unwrap();
            sock.connect(&SocketAddr::from(([10, 254, 99, 1], mport)).into())
                .unwrap();
            let mut s: TcpStream = sock.into();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        assert!(
            get("/status").starts_with("HTTP/1.1 403"),
            "{}",
            get("/status")
        );
        assert!(get("/metrics").starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").starts_with("HTTP/1.1 200"));
        ip(&["link", "del", "s3lun-t0"]);
    } else {
        eprintln!("no dummy interface here: /status from a non-loopback peer is covered by the unit test only");
    }
    // Two instances with default settings: one admin socket each, named by port.
    let other = Server::start(&["--config", cfg.to_str().unwrap()]);
    for s in [&srv, &other] {
        let path = format!("/run/s3lun/admin-{}.sock", s.port);
        if std::fs::create_dir_all("/run/s3lun").is_err() {
            eprintln!("/run/s3lun is not writable here: default sockets not checked");
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new(&path).exists() {
            assert!(Instant::now() < deadline, "no {path}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3lun"))
            .args(["admin", "--socket", &path, "state"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("ok: alua"), "{path}: {text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
    }
    // A regular file at a configured path is left alone, with a clear error.
    let precious = dir.path().join("precious");
    std::fs::write(&precious, b"keep me").unwrap();
    let log = dir.path().join("third.log");
    let third = Server::start_logged(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--admin-socket",
            precious.to_str().unwrap(),
        ],
        "warn",
        &log,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not a socket"), "{text}");
    drop(third);
}

#[test]
fn a_drains_redirect_is_told_only_to_initiators_the_acl_lets_in() {
    let dir = tempfile::tempdir().unwrap();
    let listed = "iqn.2024-01.test:listed";
    let (cfg, _) = config(
        dir.path(),
        &format!("allowed_initiators = [\"{listed}\"]\nredirect_to = [\"127.0.0.1:3999\"]\n"),
    );
    let srv = Server::start(&["--config", cfg.to_str().unwrap(), "--drain-timeout", "8"]);
    // A session that stays, so the drain lasts.
    let mut stay = Raw::as_initiator(srv.port, listed, 1);
    stay.login_normal(TARGET, &[]);
    srv.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    let mut stranger = Raw::as_initiator(srv.port, "iqn.2024-01.test:stranger", 2);
    let (r, keys) = stranger.try_login(TARGET, &[]);
    assert_eq!(
        (r.status_class, r.status_detail),
        (2, 2),
        "not on the ACL: authorization failure, not a redirect"
    );
    assert_eq!(common::raw::get(&keys, "TargetAddress"), None);
    let mut member = Raw::as_initiator(srv.port, listed, 3);
    let (r, keys) = member.try_login(TARGET, &[]);
    assert_eq!((r.status_class, r.status_detail), (1, 1), "redirected");
    assert_eq!(
        common::raw::get(&keys, "TargetAddress"),
        Some("127.0.0.1:3999,1")
    );
    drop(stay);
}
