//! libiscsi's conformance suite, `iscsi-test-cu -t ALL`, against a read-only LUN,
//! without and with `--dataloss`. Outcomes are checked against the checked-in
//! expectations (`iscsi-test-cu.expect`): a listed PASS must stay a PASS, and no test
//! may fail unless listed as an (inherent) FAIL. The image must be unchanged after.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{tool, write_image, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Pass,
    Skip,
    Fail,
}

fn outcome(s: &str) -> Outcome {
    match s {
        "PASS" => Outcome::Pass,
        "SKIP" => Outcome::Skip,
        "FAIL" => Outcome::Fail,
        other => panic!("bad outcome {other:?} in the expectations file"),
    }
}

/// Read CUnit's verbose output: `Suite: S`, then `  Test: T ...` followed by what
/// the test printed, closed by a line starting with `passed` or by `FAILED` lines.
/// A test that printed `[SKIPPED]` (and passed) is a skip.
fn parse(log: &str) -> BTreeMap<String, Outcome> {
    let mut suite = String::new();
    let mut cur: Option<String> = None;
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for line in log.lines() {
        if let Some(s) = line.strip_prefix("Suite: ") {
            suite = s.trim().to_string();
            cur = None;
            continue;
        }
        let mut rest = line;
        if let Some(t) = line.trim_start().strip_prefix("Test: ") {
            if let Some((name, after)) = t.split_once(" ...") {
                let key = format!("{suite}.{name}");
                seen.insert(key.clone(), (false, false));
                cur = Some(key);
                rest = after;
            }
        }
        let Some(key) = &cur else { continue };
        if rest.starts_with("passed") {
            cur = None;
            continue;
        }
        let entry = seen.entry(key.clone()).or_default();
        if rest.contains("[SKIPPED]") {
            entry.0 = true;
        }
        if rest.contains("FAILED") {
            entry.1 = true;
        }
        if rest.trim_end().ends_with("...passed") || rest.trim() == "passed" {
            cur = None;
        }
    }
    seen.into_iter()
        .map(|(k, (skip, fail))| {
            let o = if fail {
                Outcome::Fail
            } else if skip {
                Outcome::Skip
            } else {
                Outcome::Pass
            };
            (k, o)
        })
        .collect()
}

fn run_suite(url: &str, dataloss: bool) -> String {
    run_tests(url, "ALL", dataloss)
}

fn run_tests(url: &str, tests: &str, dataloss: bool) -> String {
    let mut cmd = Command::new(tool("iscsi-test-cu"));
    cmd.args(["-t", tests]);
    if dataloss {
        cmd.arg("--dataloss");
    }
    let out = cmd.arg(url).output().expect("run iscsi-test-cu");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn counts(r: &BTreeMap<String, Outcome>) -> (usize, usize, usize) {
    let n = |o| r.values().filter(|&&v| v == o).count();
    (n(Outcome::Pass), n(Outcome::Skip), n(Outcome::Fail))
}

#[test]
fn libiscsi_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let (img, data) = write_image(dir.path(), "suite.img", 16 * 1024 * 1024 + 512 * 3, 21);
    let mut srv = Server::start(&["--lun", img.to_str().unwrap()]);
    let url = srv.url(0);

    let expect_text = include_str!("iscsi-test-cu.expect");
    let mut expected: BTreeMap<String, (Outcome, Outcome)> = BTreeMap::new();
    for line in expect_text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "bad expectations line {line:?}");
        expected.insert(f[0].to_string(), (outcome(f[1]), outcome(f[2])));
    }

    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let mut summary = String::new();
    let mut problems = Vec::new();
    for dataloss in [false, true] {
        let log = run_suite(&url, dataloss);
        let name = if dataloss {
            "with --dataloss"
        } else {
            "without --dataloss"
        };
        let file = if dataloss {
            "iscsi-test-cu-dataloss.log"
        } else {
            "iscsi-test-cu.log"
        };
        let _ = std::fs::write(out_dir.join(file), &log);
        let got = parse(&log);
        assert!(
            got.len() > 200,
            "{name}: only {} tests parsed\n{log}",
            got.len()
        );
        for (test, o) in &got {
            let Some(&(plain, dl)) = expected.get(test) else {
                problems.push(format!(
                    "{name}: {test} is not in iscsi-test-cu.expect ({o:?})"
                ));
                continue;
            };
            let want = if dataloss { dl } else { plain };
            if want == Outcome::Pass && *o != Outcome::Pass {
                problems.push(format!("{name}: {test} regressed: {o:?}, expected PASS"));
            }
            if *o == Outcome::Fail && want != Outcome::Fail {
                problems.push(format!("{name}: {test} FAILED, expected {want:?}"));
            }
        }
        for test in expected.keys() {
            if !got.contains_key(test) {
                problems.push(format!("{name}: {test} did not run"));
            }
        }
        let (p, s, f) = counts(&got);
        let inherent = got.values().filter(|&&o| o == Outcome::Fail).count();
        summary.push_str(&format!(
            "iscsi-test-cu -t ALL {name}: {p} pass, {s} skip, {f} fail ({inherent} listed as inherent to a write-protected LU)\n"
        ));
        if !dataloss {
            // tgt on this machine: 76 pass / 125 skip / 29 fail. The RESERVE(6) tests
            // skip here on purpose (reservations are off on shared images); they
            // pass on a LUN configured for them, below.
            let refused = got
                .iter()
                .filter(|(t, &o)| t.starts_with("Reserve6.") && o == Outcome::Skip)
                .count();
            assert!(
                s - refused < 125,
                "{s} skips ({refused} RESERVE(6)): not below tgt's 125"
            );
        }
    }
    let _ = std::fs::write(out_dir.join("iscsi-test-cu-summary.txt"), &summary);
    eprint!("{summary}");
    assert!(srv.alive(), "s3lun exited during the suite");
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The read-only LUN really is read-only.
    let after = std::fs::read(&img).unwrap();
    assert!(after == data, "the image changed under the suite");
    drop(srv);

    // A LUN configured with `reservations = true`: every RESERVE(6) test passes.
    let cfg = dir.path().join("reservations.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[lun]]\npath = \"{}\"\nreservations = true\n",
            img.display()
        ),
    )
    .unwrap();
    let srv = Server::start(&["--config", cfg.to_str().unwrap()]);
    let log = run_tests(&srv.url(0), "SCSI.Reserve6", false);
    let got = parse(&log);
    let reserve: Vec<_> = got
        .iter()
        .filter(|(t, _)| t.starts_with("Reserve6."))
        .collect();
    assert_eq!(reserve.len(), 7, "RESERVE(6) tests run:\n{log}");
    for (t, o) in reserve {
        assert_eq!(*o, Outcome::Pass, "{t} with reservations = true:\n{log}");
    }
    let line = "iscsi-test-cu -t SCSI.Reserve6 on a LUN with reservations = true: 7 pass\n";
    eprint!("{line}");
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .open(out_dir.join("iscsi-test-cu-summary.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}
