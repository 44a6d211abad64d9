//! The control plane as an operator meets it under systemd, with an S3 that hangs,
//! goes away or loses objects: SIGTERM always ends the process within the drain
//! time plus one second, signals and status answer while a scan hangs, a target
//! starts and serves from its local state and cache without S3, and one unreadable
//! image never takes the others with it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::faulty::Proxy;
use common::moto::{metric, Moto};
use common::raw::{read10, sense, Raw};
use common::{convert_cmd, eventually, http_get, pattern, report_luns, Server};

const CHUNK: usize = 1 << 20;
/// The drain the tests' targets get (common::serve_args).
const DRAIN: Duration = Duration::from_secs(3);

/// READ(10) of one chunk, past any unit attention (power-on, LUNs changed).
fn read_chunk(r: &mut Raw, lun: u64, chunk: usize) -> (Vec<u8>, u8, Vec<u8>) {
    let lba = (chunk * CHUNK / 512) as u32;
    for _ in 0..3 {
        let out = r.command(lun, &read10(lba, (CHUNK / 512) as u16), CHUNK as u32);
        if out.1 != 2 || sense(&out.2).0 != 6 {
            return out;
        }
    }
    r.command(lun, &read10(lba, (CHUNK / 512) as u16), CHUNK as u32)
}

/// SIGTERM, then the time until the process is gone and its exit code.
fn stop_timed(srv: &mut Server) -> (Duration, Option<i32>) {
    let t0 = Instant::now();
    srv.signal("TERM");
    loop {
        if let Some(code) = srv.exit_code() {
            return (t0.elapsed(), Some(code));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return (t0.elapsed(), None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One line to the admin socket, its answer and how long it took.
fn admin(sock: &Path, line: &str) -> (String, Duration) {
    let t0 = Instant::now();
    let mut s = UnixStream::connect(sock).expect("admin socket");
    writeln!(s, "{line}").unwrap();
    let mut answer = String::new();
    BufReader::new(&mut s).read_line(&mut answer).unwrap();
    (answer.trim().to_string(), t0.elapsed())
}

fn s3_section(endpoint: &str) -> String {
    format!(
        "[s3]\nendpoint = \"{endpoint}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n\
         attempts = 2\nattempt_timeout_secs = 2\ndeadline_secs = 4\n"
    )
}

#[test]
fn aborted_and_stalled_reads_never_hold_up_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(12 * CHUNK, 71);
    moto.put(d, "boot-images", "PE/exit.img", &data, &[]);
    let proxy = Proxy::start(moto.port);
    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[cache]\ndir = \"{}\"\nchunk_size = {CHUNK}\nreadahead_chunks = 2\n\
             [[lun]]\ns3 = \"s3://boot-images/PE/exit.img\"\n",
            s3_section(&proxy.endpoint),
            d.join("cache").display()
        ),
    )
    .unwrap();
    let (mut srv, _) = Server::start_config(&cfg);
    // A reader that goes away mid-read: its reads (and their read-ahead) are in
    // flight, S3 stalling mid-body, when its connection closes.
    proxy.arm("stall-body", 6);
    let mut reader = convert_cmd(&srv.url(0), &d.join("out.raw"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = reader.kill();
    let _ = reader.wait();
    // A session that stays logged in (it never answers the logout request), and
    // one whose read is stuck in S3, while the stop comes.
    let stuck = Raw::session(srv.port);
    proxy.arm("stall", 4);
    let port = srv.port;
    let hold = std::thread::spawn(move || {
        let mut r = Raw::session(port);
        let _ = read_chunk(&mut r, 0, 10);
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        proxy.served() >= 1,
        "no read was broken: the test tests nothing"
    );
    let (took, code) = stop_timed(&mut srv);
    assert_eq!(code, Some(0), "exit code");
    assert!(
        took <= DRAIN + Duration::from_secs(1),
        "exit took {took:?}: more than the drain ({DRAIN:?}) plus one second"
    );
    drop(stuck);
    let _ = hold.join();
}

/// A server that accepts connections and never answers: every S3 call hangs.
fn hanging_s3() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
            if held.len() > 500 {
                break;
            }
        }
    });
    (port, t)
}

#[test]
fn with_s3_hanging_signals_and_status_answer_at_once_and_sigterm_exits_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (s3_port, _s3) = hanging_s3();
    let (_, image) = common::write_image(d, "local.img", 2 * CHUNK, 72);
    let sock = d.join("admin.sock");
    let cfg = d.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "admin_socket = \"{}\"\n[s3]\nendpoint = \"http://127.0.0.1:{s3_port}\"\n\
             access_key = \"test\"\nsecret_key = \"test\"\n\
             [cache]\ndir = \"{}\"\n[catalog]\nmanifest_buckets = [\"boot-images\"]\n\
             prefixes = [\"s3://boot-images/PE/\"]\n\
             [[lun]]\npath = \"{}\"\n",
            sock.display(),
            d.join("cache").display(),
            d.join("local.img").display()
        ),
    )
    .unwrap();
    let log = d.join("s3lun.log");
    let t0 = Instant::now();
    let (mut srv, mport) = Server::start_config_logged(&cfg, "info", &log);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "start-up waited on S3: {:?}",
        t0.elapsed()
    );
    // The local LUN serves while the first scan hangs on S3.
    let mut r = Raw::session(srv.port);
    r.read_checked(&image, 0, 8);
    std::thread::sleep(Duration::from_millis(500));
    let (answer, took) = admin(&sock, "state");
    assert!(answer.contains("scanning"), "{answer}");
    assert!(
        took < Duration::from_millis(100),
        "admin state took {took:?}"
    );
    let t = Instant::now();
    let (code, body) = http_get(mport, "/status");
    let took = t.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(took < Duration::from_millis(100), "/status took {took:?}");
    // SIGHUP: the configuration is re-read at once, whatever the scan does.
    let reread = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("configuration re-read")
            .count()
    };
    assert_eq!(reread(), 0);
    let t = Instant::now();
    srv.signal("HUP");
    while reread() == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "SIGHUP answered in {took:?}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("scan abandoned"),
        "the hanging scan was not replaced"
    );
    r.read_checked(&image, 8, 8);
    let (took, code) = stop_timed(&mut srv);
    assert_eq!(code, Some(0));
    assert!(
        took <= DRAIN + Duration::from_secs(1),
        "exit took {took:?} with S3 hanging"
    );
}

/// moto behind a proxy that can go away and come back on the same port.
struct Site {
    dir: tempfile::TempDir,
    moto: Moto,
    proxy: Option<Proxy>,
    proxy_port: u16,
    cfg: PathBuf,
}

fn site(statics: &[&str], refresh: u64) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let proxy = Proxy::start(moto.port);
    let cfg = dir.path().join("s3lun.toml");
    let mut text = format!(
        "state_file = \"{}\"\n{}[cache]\ndir = \"{}\"\nchunk_size = {CHUNK}\nreadahead_chunks = 0\n\
         [catalog]\nprefixes = [\"s3://boot-images/PE/\"]\nrefresh_secs = {refresh}\n",
        dir.path().join("luns.json").display(),
        s3_section(&proxy.endpoint),
        dir.path().join("cache").display()
    );
    for key in statics {
        text.push_str(&format!("[[lun]]\ns3 = \"s3://boot-images/{key}\"\n"));
    }
    std::fs::write(&cfg, text).unwrap();
    Site {
        proxy_port: proxy.port,
        proxy: Some(proxy),
        dir,
        moto,
        cfg,
    }
}

impl Site {
    fn put(&self, key: &str, data: &[u8]) {
        self.moto
            .put(self.dir.path(), "boot-images", key, data, &[]);
    }
}

#[test]
fn without_s3_a_restart_serves_cached_bytes_and_catches_up_when_s3_returns() {
    let mut s = site(&["static/root.img"], 1);
    let stat = pattern(6 * CHUNK, 73);
    let pe = pattern(6 * CHUNK, 74);
    s.put("static/root.img", &stat);
    s.put("PE/pe.img", &pe);
    let numbers = {
        let (mut srv, mport) = Server::start_config(&s.cfg);
        eventually("the catalog image is a LUN", 30, || {
            metric(mport, "s3lun_luns") == 2
        });
        let mut r = Raw::session(srv.port);
        for (lun, data) in [(0, &stat), (1, &pe)] {
            let (d, st, _) = read_chunk(&mut r, lun, 0);
            assert_eq!(st, 0);
            assert!(d[..] == data[..CHUNK]);
        }
        let numbers = report_luns(&srv);
        let (_, code) = stop_timed(&mut srv);
        assert_eq!(code, Some(0));
        numbers
    };
    assert_eq!(numbers, vec![0, 1]);
    // S3 is gone.
    s.proxy.take();
    let (srv, mport) = Server::start_config(&s.cfg);
    assert_eq!(report_luns(&srv), numbers, "the last numbers, at once");
    let mut r = Raw::session(srv.port);
    for (lun, data) in [(0, &stat), (1, &pe)] {
        let (d, st, _) = read_chunk(&mut r, lun, 0);
        assert_eq!(st, 0, "cached chunk of LUN {lun}");
        assert!(d[..] == data[..CHUNK], "cached bytes of LUN {lun}");
        let (_, st, sn) = read_chunk(&mut r, lun, 3);
        assert_eq!(
            (st, sense(&sn).0),
            (2, 2),
            "an uncached chunk of LUN {lun} is NOT READY"
        );
    }
    assert_eq!(report_luns(&srv), numbers, "failed scans keep the table");
    // S3 comes back: the same LUNs read normally, without a restart.
    s.proxy = Some(Proxy::start_on(s.proxy_port, s.moto.port));
    for (lun, data) in [(0, &stat), (1, &pe)] {
        eventually("S3 is read again", 30, || {
            let (d, st, _) = read_chunk(&mut r, lun, 3);
            st == 0 && d[..] == data[3 * CHUNK..4 * CHUNK]
        });
    }
    // The next scan (a second later) finds the static object again.
    eventually("the static LUN is readable again at a scan", 30, || {
        metric(mport, "s3lun_static_luns_unavailable") == 0
    });
}

#[test]
fn a_deleted_static_object_is_its_own_problem_and_a_restart_still_works() {
    let s = site(&["static/a.img", "static/b.img"], 1);
    let a = pattern(4 * CHUNK, 75);
    let b = pattern(4 * CHUNK, 76);
    s.put("static/a.img", &a);
    s.put("static/b.img", &b);
    let (mut srv, mport) = Server::start_config(&s.cfg);
    assert_eq!(report_luns(&srv), vec![0, 1]);
    let mut r = Raw::session(srv.port);
    let (d, st, _) = read_chunk(&mut r, 0, 0);
    assert_eq!(st, 0);
    assert!(d[..] == a[..CHUNK]);
    s.moto.ctl(&["delete", "boot-images", "static/a.img"]);
    let c = pattern(2 * CHUNK, 77);
    s.put("PE/c.img", &c);
    eventually("the new catalog image appears", 30, || {
        report_luns(&srv) == vec![0, 1, 2]
    });
    eventually("the deleted object is reported", 10, || {
        metric(mport, "s3lun_static_luns_unavailable") == 1
    });
    let (d, st, _) = read_chunk(&mut r, 1, 2);
    assert_eq!(st, 0, "the other static LUN reads");
    assert!(d[..] == b[2 * CHUNK..3 * CHUNK]);
    let (d, st, _) = read_chunk(&mut r, 2, 1);
    assert_eq!(st, 0, "the new catalog LUN reads");
    assert!(d[..] == c[CHUNK..]);
    let (_, st, sn) = read_chunk(&mut r, 0, 3);
    assert_eq!(
        (st, sense(&sn).0),
        (2, 2),
        "never-cached bytes of the deleted object: NOT READY, never other bytes"
    );
    drop(r);
    let (_, code) = stop_timed(&mut srv);
    assert_eq!(code, Some(0));
    // The next start works, with every number where it was.
    let (srv, _) = Server::start_config(&s.cfg);
    assert_eq!(report_luns(&srv), vec![0, 1, 2]);
    let mut r = Raw::session(srv.port);
    let (d, st, _) = read_chunk(&mut r, 1, 0);
    assert_eq!(st, 0);
    assert!(d[..] == b[..CHUNK]);
}
