//! What an operator runs and reads: `/status` and `s3lun status` with live sessions,
//! per-LUN metrics, the Grafana dashboard against a live `/metrics`, the log rate
//! limit under a flood of failing reads (text and JSON), `s3lun check`, and the
//! README's "Connect to it" commands run as written against the demo.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::moto::Moto;
use common::raw::{read10, sense, Raw};
use common::{free_port, http_get, pattern, run, write_image, Server, TARGET};

fn s3lun(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(args)
        .output()
        .expect("run s3lun")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn status_shows_who_reads_what_and_metrics_count_per_lun() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = write_image(dir.path(), "a.img", 1 << 20, 7);
    let (img2, _) = write_image(dir.path(), "b.img", 1 << 20, 8);
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let srv = Server::start(&[
        "--lun",
        img.to_str().unwrap(),
        "--lun",
        img2.to_str().unwrap(),
        "--metrics-listen",
        &maddr,
    ]);
    let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:node-17", 0x4242);
    r.login_normal(TARGET, &[]);
    // The unit attention of a new nexus, out of the way.
    let _ = r.command(0, &[0x00], 0);
    for lba in [0u32, 8, 16] {
        r.read_checked(&data, lba, 8);
    }
    // A read past the end: CHECK CONDITION from the protocol; the store never
    // sees it.
    let (_, st, s) = r.command(0, &read10(1 << 20, 8), 4096);
    assert_eq!((st, sense(&s).0), (2, 5));

    let (code, body) = http_get(mport, "/status");
    assert_eq!(code, 200, "{body}");
    let st = json(&body);
    assert_eq!(st["target"]["name"], TARGET);
    assert_eq!(st["target"]["ready"], true);
    let sessions = st["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{body}");
    let s = &sessions[0];
    assert_eq!(s["initiator"], "iqn.2024-01.test:node-17");
    assert!(s["isid"].as_str().unwrap().ends_with("4242"), "{s}");
    assert_ne!(s["tsih"], 0);
    assert_eq!(s["type"], "normal");
    assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(s["portal"], srv.addr.as_str());
    assert_eq!(s["luns"], serde_json::json!([0]));
    assert_eq!(s["read_bytes"], 3 * 4096);
    let luns = st["luns"].as_array().unwrap();
    assert_eq!(luns.len(), 2);
    let l0 = &luns[0];
    assert_eq!(l0["lun"], 0);
    assert_eq!(l0["origin"], "file");
    assert_eq!(l0["state"], "ok");
    assert_eq!(l0["size"], 1 << 20);
    assert_eq!(l0["sessions"], 1);
    assert_eq!(l0["read_bytes"], 3 * 4096);
    assert!(l0["wwid"].as_str().unwrap().starts_with("36001405"));
    assert_eq!(luns[1]["sessions"], 0);

    let (_, m) = http_get(mport, "/metrics");
    let ident = img.canonicalize().unwrap();
    let labels = format!("{{lun=\"0\",image=\"file://{}\"}}", ident.display());
    for (name, want) in [
        ("s3lun_lun_reads_total", 3),
        ("s3lun_lun_read_bytes_total", 3 * 4096),
        ("s3lun_lun_read_errors_total", 0),
    ] {
        let line = format!("{name}{labels} {want}");
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    let portal = format!("s3lun_portal_sessions{{portal=\"{}\"}} 1", srv.addr);
    assert!(m.lines().any(|l| l == portal), "no {portal:?}");
    assert!(m.contains("s3lun_read_latency_seconds_count 3"), "{m}");

    assert_eq!(http_get(mport, "/readyz").0, 200);
    assert_eq!(http_get(mport, "/healthz").0, 200);
    assert_eq!(http_get(mport, "/nope").0, 404);
    assert_eq!(http_get(mport, "/").0, 404);

    // The operator's view, as a tree and as JSON.
    let out = s3lun(&["status", "--address", &maddr]);
    assert!(out.status.success());
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.starts_with(&format!("o- {TARGET} [")), "{tree}");
    assert!(
        tree.contains("o- iqn.2024-01.test:node-17 [normal"),
        "{tree}"
    );
    assert!(tree.contains("lun0"), "{tree}");
    assert!(tree.contains("o- lun1 "), "{tree}");
    let out = s3lun(&["status", "--address", &maddr, "--output", "json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["luns"][0]["lun"],
        0
    );

    // The session goes: it leaves /status.
    r.logout();
    std::thread::sleep(Duration::from_millis(200));
    let st = json(&http_get(mport, "/status").1);
    assert_eq!(st["sessions"].as_array().unwrap().len(), 0);
}

/// Metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("s3lun_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Whether `/metrics` text has `name`: a sample, or a declared family (a labelled
/// family has no sample until its first event).
fn exposes(metrics: &str, name: &str) -> bool {
    let sample = metrics
        .lines()
        .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
    // A labelled family with no sample yet shows by its TYPE line.
    let family = metrics.lines().any(|l| {
        l.strip_prefix("# TYPE ")
            .is_some_and(|t| t.split(' ').next() == Some(name))
    });
    sample || family
}

#[test]
fn the_dashboard_queries_only_metrics_a_live_target_exposes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana/s3lun-dashboard.json");
    let dash = json(&std::fs::read_to_string(&path).unwrap());
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let names: std::collections::BTreeSet<String> =
        all.iter().flat_map(|e| metric_names(e)).collect();
    assert!(names.len() >= 15, "{names:?}");

    // A target with an S3 image (so S3 metrics exist) and a session reading it.
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(1 << 20, 3);
    moto.put(dir.path(), "boot-images", "PE/x.squashfs", &data, &[]);
    let cfg = dir.path().join("s3lun.toml");
    let admin = dir.path().join("admin.sock");
    std::fs::write(
        &cfg,
        format!(
            "admin_socket = \"{}\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\nattempts = 1\nattempt_timeout_secs = 1\ndeadline_secs = 2\n[cache]\ndir = \"{}\"\nchunk_size = 65536\nreadahead_chunks = 0\n[[lun]]\ns3 = \"s3://boot-images/PE/x.squashfs\"\n",
            admin.display(),
            moto.endpoint,
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let (srv, mport) = Server::start_config(&cfg);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    r.read_checked(&data, 0, 8);
    let (_, metrics) = http_get(mport, "/metrics");
    let missing: Vec<&String> = names.iter().filter(|n| !exposes(&metrics, n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not have:\n{metrics}"
    );
    // The check can fail: a name that is not there is found missing.
    assert!(!exposes(&metrics, "s3lun_no_such_metric_total"));
    // The classic text format, as its content type says: promtool finds nothing.
    let promtool = |text: &str| {
        let mut p = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (scripts/test installs it)");
        use std::io::Write as _;
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let said = promtool(&metrics);
    assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
    // It can fail: the OpenMetrics rendering (asked for by its content type) read
    // as classic text does not pass.
    let om = {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", mport)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"
        )
        .unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    };
    assert!(om.contains("application/openmetrics-text") && om.contains("# EOF"));
    let body = om.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(!promtool(body).trim().is_empty());

    // The admin socket: a purge empties the cache (it shows in /status), a reload
    // answers once done.
    let cached = |port| {
        json(&http_get(port, "/status").1)["luns"][0]["cached_fraction"]
            .as_f64()
            .unwrap_or(-1.0)
    };
    let sock = admin.to_str().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the write-behind
    assert!(cached(mport) > 0.0);
    let out = s3lun(&["admin", "--socket", sock, "purge"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: purged"));
    assert_eq!(cached(mport), 0.0);
    r.read_checked(&data, 0, 8);
    assert!(cached(mport) > 0.0, "read again from S3 after the purge");
    let out = s3lun(&["admin", "--socket", sock, "reload"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: reloaded, 1 LUNs\n"
    );

    // S3 goes away: the next read of an uncached chunk finds no server, and the
    // target says it is not ready for new sessions (its S3 LUN cannot be read).
    assert_eq!(http_get(mport, "/readyz").0, 200);
    let mut moto = moto;
    moto.stop();
    let (_, st, _) = r.command(0, &read10(1024, 8), 4096);
    assert_eq!(st, 2, "a read with S3 gone");
    let (code, body) = http_get(mport, "/readyz");
    assert_eq!((code, body.as_str()), (503, "not ready: S3 unreachable\n"));
    let (_, metrics) = http_get(mport, "/metrics");
    assert!(metrics.contains("\ns3lun_s3_reachable 0\n"), "{metrics}");
    assert_eq!(
        json(&http_get(mport, "/status").1)["s3"]["reachable"],
        false
    );
}

/// A config serving one S3 image from moto, whose object is then replaced: every
/// read of a chunk not yet cached fails (the LUN is stale until reopened).
fn stale_lun(dir: &Path, moto: &Moto) -> PathBuf {
    moto.ctl(&["mkbucket", "boot-images"]);
    moto.put(dir, "boot-images", "PE/s.img", &pattern(4 << 20, 1), &[]);
    let cfg = dir.join("s3lun.toml");
    std::fs::write(
        &cfg,
        format!(
            "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[cache]\ndir = \"{}\"\nchunk_size = 1048576\nreadahead_chunks = 0\n[[lun]]\ns3 = \"s3://boot-images/PE/s.img\"\n",
            moto.endpoint,
            dir.join("cache").display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn ten_thousand_failing_reads_log_a_bounded_number_of_lines() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let moto = Moto::start();
        let cfg = stale_lun(dir.path(), &moto);
        let log = dir.path().join("stderr.log");
        let mport = free_port();
        let maddr = format!("127.0.0.1:{mport}");
        let srv = Server::start_logged(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--log-format",
                format,
                "--metrics-listen",
                &maddr,
            ],
            "warn",
            &log,
        );
        let mut r = Raw::connect(srv.port);
        r.login_normal(TARGET, &[]);
        let _ = r.command(0, &[0x00], 0);
        moto.put(
            dir.path(),
            "boot-images",
            "PE/s.img",
            &pattern(4 << 20, 2),
            &[],
        );
        let (mut failed, mut bystander_ok) = (0, 0);
        let mut b = Raw::as_initiator(srv.port, "iqn.2024-01.test:bystander", 9);
        b.login_normal(TARGET, &[]);
        for i in 0..10_000u32 {
            // The last chunk: never cached, so never served once the object changed.
            let (_, st, _) = r.command(0, &read10(3 * 2048 + (i % 2048), 1), 512);
            failed += u32::from(st == 2);
            if i % 1000 == 0 {
                b.nop(b"alive");
                bystander_ok += 1;
            }
        }
        assert_eq!(
            failed, 10_000,
            "{format}: every read of the replaced object fails"
        );
        assert_eq!(bystander_ok, 10);
        let (_, m) = http_get(mport, "/metrics");
        let errors = m
            .lines()
            .find_map(|l| l.strip_prefix("s3lun_lun_read_errors_total{lun=\"0\""))
            .and_then(|rest| rest.split_whitespace().last()?.parse::<u64>().ok());
        assert_eq!(errors, Some(10_000), "{m}");
        let st = json(&http_get(mport, "/status").1);
        assert_eq!(st["luns"][0]["state"], "stale", "{st}");
        // A window later, the next failure is preceded by the summary.
        std::thread::sleep(Duration::from_millis(10_500));
        let (_, st, _) = r.command(0, &read10(3 * 2048, 1), 512);
        assert_eq!(st, 2);
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let failures = lines.iter().filter(|l| l.contains("read failed")).count();
        assert!(
            (1..=12).contains(&failures),
            "{format}: {failures} 'read failed' lines for 10,001 failures:\n{text}"
        );
        assert!(
            lines.len() <= 40,
            "{format}: {} lines in all:\n{text}",
            lines.len()
        );
        assert!(
            text.contains("similar messages suppressed"),
            "{format}: no summary:\n{text}"
        );
        if format == "json" {
            for l in &lines {
                let v = json(l);
                assert!(v["fields"]["message"].is_string(), "{l}");
                assert!(v["level"].is_string(), "{l}");
            }
        }
    }
}

#[test]
fn check_reports_each_problem_on_one_line_and_passes_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let (img, _) = write_image(dir.path(), "a.img", 4096, 1);
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "listen = [\"127.0.0.1:3260\"]\nstate_file = \"{}\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[catalog]\nprefixes = [\"s3://boot-images/PE/\"]\n[[lun]]\npath = \"{}\"\nlun = 1\n[chap]\nuser = \"node\"\nsecret = \"a-secret-of-16-b\"\n",
            dir.path().join("state.json").display(),
            moto.endpoint,
            img.display()
        ),
    )
    .unwrap();
    let out = s3lun(&["check", "--config", good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.trim_end().ends_with(": ok"), "{text}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "listen = [\"203.0.113.7:3260\", \"localhost\"]\nstate_file = \"/nonexistent-dir/state.json\"\n[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[catalog]\nprefixes = [\"s3://no-such-bucket/PE/\"]\n[[lun]]\npath = \"/nonexistent/a.img\"\nlun = 3\n[[lun]]\npath = \"{}\"\nlun = 3\n[chap]\nuser = \"node\"\nsecret = \"short\"\n",
            moto.endpoint,
            img.display()
        ),
    )
    .unwrap();
    let out = s3lun(&["check", "--config", bad.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect();
    for want in [
        "listen \"203.0.113.7:3260\": not an address of this host",
        "listen \"localhost\": not ip:port",
        "state_file directory /nonexistent-dir",
        "[[lun]] path /nonexistent/a.img",
        "LUN 3 is pinned by 2",
        "shorter than 12 bytes",
        "no-such-bucket",
    ] {
        assert_eq!(
            problems.iter().filter(|p| p.contains(want)).count(),
            1,
            "one line with {want:?} in:\n{text}"
        );
    }
    assert_eq!(problems.len(), 7, "{text}");
    assert!(text.contains("7 problems"), "{text}");

    // An unknown key: named, with its line.
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "target_alias = \"x\"\nlisten_on = [\"127.0.0.1:3260\"]\n",
    )
    .unwrap();
    let out = s3lun(&["check", "--config", typo.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1));
    let line = text.lines().next().unwrap_or_default();
    assert!(
        line.contains("line 2") && line.contains("unknown field `listen_on`"),
        "{text}"
    );
    // The server refuses it the same way.
    let out = s3lun(&["serve", "--config", typo.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `listen_on`"));
}

/// The README's "Connect to it" commands, as written, against `serve --demo` (on
/// a free port instead of 3260).
#[test]
fn the_readme_connect_commands_work_as_written_against_the_demo() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Connect to it")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("a sh block under Connect to it");
    let srv = Server::start_raw(&["serve", "--demo", "--listen", "127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for line in section.lines().filter(|l| l.starts_with("iscsi-")) {
        let line = line.replace("127.0.0.1:3260", &srv.addr);
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = run(words[0], &words[1..]);
        if words.contains(&"-c") {
            assert!(out.contains("DEVICE_IDENTIFICATION"), "{line}:\n{out}");
        }
        ran += 1;
    }
    assert!(ran >= 4, "{section}");
    let qemu = section
        .lines()
        .find(|l| l.starts_with("qemu-img convert"))
        .expect("the qemu-img line")
        .replace("127.0.0.1:3260", &srv.addr)
        .replace("copy.img", dir.path().join("copy.img").to_str().unwrap());
    let words: Vec<&str> = qemu.split_whitespace().collect();
    let st = Command::new(words[0]).args(&words[1..]).status().unwrap();
    assert!(st.success(), "{qemu}");
    let demo = include_bytes!("../assets/demo.squashfs");
    let copy = std::fs::read(dir.path().join("copy.img")).unwrap();
    assert_eq!(&copy[..demo.len()], &demo[..]);
}
