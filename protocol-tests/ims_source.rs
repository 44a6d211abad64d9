//! The IMS source as a real site runs it: HTTPS signed by the site's own CA (made
//! here with openssl), bearer tokens from a command that rotates them (SPIRE's JWT
//! fetch stands behind it in production), a command that hangs, and no token ever in
//! the log, even at trace level.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::moto::{metric, Moto};
use common::{eventually, free_port, pattern, report_luns, Server};

/// Kills the helper process on drop.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key).
fn site_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=s3lun test site CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// A JWT-shaped token (unsigned: the stand-in IMS compares strings) expiring at `exp`.
fn jwt(name: &str, exp: u64) -> String {
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"ES256","typ":"JWT"}"#),
        b(&format!(
            r#"{{"sub":"spiffe://shasta/ncn/workload/{name}","exp":{exp}}}"#
        )),
        b(&format!("signature-of-{name}"))
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Site {
    dir: tempfile::TempDir,
    moto: Moto,
    ca: PathBuf,
    port: u16,
    _ims: Child,
}

impl Site {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with the IMS source, `token` lines in the [catalog] section.
    fn config(&self, name: &str, catalog_extra: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(
            &p,
            format!(
                "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\n[cache]\ndir = \"{}\"\n[catalog]\nims_url = \"https://127.0.0.1:{}/v3/images\"\nrefresh_secs = 1\n{catalog_extra}",
                self.moto.endpoint,
                self.path("cache").display(),
                self.port
            ),
        )
        .unwrap();
        p
    }

    /// Tokens presented to IMS so far.
    fn seen(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("images.json.seen"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// moto with one tagged image, and an HTTPS IMS listing it that accepts the tokens
/// in `valid-tokens`.
fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = site_ca(d);
    let moto = Moto::start();
    moto.ctl(&["mkbucket", "boot-images"]);
    let etag = moto.put(d, "boot-images", "img1/rootfs", &pattern(1 << 20, 5), &[]);
    let manifest = serde_json::json!({"artifacts": [{
        "link": {"path": "s3://boot-images/img1/rootfs", "etag": etag, "type": "s3"},
        "type": "application/vnd.cray.image.rootfs.squashfs"}]});
    moto.put(
        d,
        "boot-images",
        "img1/manifest.json",
        manifest.to_string().as_bytes(),
        &[],
    );
    let images = serde_json::json!([{"id": "img1",
        "link": {"path": "s3://boot-images/img1/manifest.json", "type": "s3"},
        "metadata": {"sbps-project": "true"}}]);
    std::fs::write(d.join("images.json"), images.to_string()).unwrap();
    std::fs::write(d.join("valid-tokens"), "").unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/s3/fake_ims.py");
    let valid = format!("@{}", d.join("valid-tokens").display());
    let ims = Child(
        Command::new("python3")
            .arg(script)
            .args([&port.to_string(), &valid])
            .arg(d.join("images.json"))
            .args([&cert, &key])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the IMS stand-in did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Site {
        dir,
        moto,
        ca,
        port,
        _ims: ims,
    }
}

/// A token command: prints the `current-token` file and counts its runs in `runs`.
fn token_command(site: &Site) -> String {
    let script = site.path("token.sh");
    std::fs::write(
        &script,
        format!(
            "echo run >> {runs}\ncat {cur}\n",
            runs = site.path("runs").display(),
            cur = site.path("current-token").display()
        ),
    )
    .unwrap();
    format!(
        "ims_token_command = [\"/bin/sh\", \"{}\"]\n",
        script.display()
    )
}

fn runs(site: &Site) -> usize {
    std::fs::read_to_string(site.path("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn catalog(cfg: &Path) -> (String, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["catalog", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        t.elapsed(),
    )
}

#[test]
fn https_with_the_site_ca_and_not_without_it() {
    let site = site();
    std::fs::write(site.path("valid-tokens"), "static-token\n").unwrap();
    std::fs::write(site.path("token"), "static-token\n").unwrap();
    let token = format!("ims_token_file = \"{}\"\n", site.path("token").display());
    let with = site.config(
        "with-ca.toml",
        &format!("{token}ca_file = \"{}\"\n", site.ca.display()),
    );
    let (text, _) = catalog(&with);
    assert!(text.contains("img1\tims\t"), "{text}");
    assert!(text.contains("1 images served"), "{text}");

    let without = site.config("without-ca.toml", &token);
    let (text, _) = catalog(&without);
    assert!(text.contains("0 images served"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("WARNING\tIMS\t"))
        .unwrap_or_else(|| panic!("no IMS problem line:\n{text}"));
    assert!(
        line.contains("ims_tls") && line.to_lowercase().contains("certificate"),
        "{line}"
    );

    // A ca_file that is no certificate: refused at start with its name.
    std::fs::write(site.path("junk.pem"), "not a certificate\n").unwrap();
    let junk = site.config(
        "junk-ca.toml",
        &format!("{token}ca_file = \"{}\"\n", site.path("junk.pem").display()),
    );
    let (text, _) = catalog(&junk);
    assert!(
        text.contains("ims_tls") && text.contains("junk.pem"),
        "{text}"
    );
}

#[test]
fn rotating_tokens_from_a_command_never_logged_and_a_hung_command_killed() {
    let site = site();
    let a = jwt("a", now() + 3600);
    std::fs::write(site.path("current-token"), format!("{a}\n")).unwrap();
    std::fs::write(site.path("valid-tokens"), format!("{a}\n")).unwrap();
    let cfg = site.config(
        "s3lun.toml",
        &format!(
            "{}ca_file = \"{}\"\n",
            token_command(&site),
            site.ca.display()
        ),
    );
    let log = site.path("trace.log");
    let (srv, mport) = {
        let metrics = format!("127.0.0.1:{}", free_port());
        let srv = Server::start_logged(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--metrics-listen",
                &metrics,
            ],
            "trace",
            &log,
        );
        let port: u16 = metrics.rsplit(':').next().unwrap().parse().unwrap();
        (srv, port)
    };
    eventually("the IMS image as a LUN", 30, || {
        metric(mport, "s3lun_luns") == 1
    });
    // Scans every second; a JWT valid for an hour is fetched once.
    let scans = metric(mport, "s3lun_catalog_scans_total");
    eventually("three more scans", 20, || {
        metric(mport, "s3lun_catalog_scans_total") >= scans + 3
    });
    assert_eq!(
        runs(&site),
        1,
        "a token valid for an hour was fetched again"
    );

    // Rotation: IMS now takes only B. The refused A is dropped and the command run
    // again; the LUN stays served throughout.
    let b = jwt("b", now() + 3600);
    std::fs::write(site.path("current-token"), format!("{b}\n")).unwrap();
    std::fs::write(site.path("valid-tokens"), format!("{b}\n")).unwrap();
    eventually("token B presented", 20, || site.seen().contains(&b));
    assert!(runs(&site) >= 2);
    assert_eq!(report_luns(&srv), vec![0]);

    // A token close to its exp is refreshed before it is used again.
    let c = jwt("c", now() + 62);
    let d = jwt("d", now() + 3600);
    std::fs::write(site.path("current-token"), format!("{c}\n")).unwrap();
    std::fs::write(site.path("valid-tokens"), format!("{c}\n{d}\n")).unwrap();
    eventually("token C presented", 20, || site.seen().contains(&c));
    std::fs::write(site.path("current-token"), format!("{d}\n")).unwrap();
    eventually("C refreshed to D at its expiry", 20, || {
        site.seen().contains(&d)
    });
    let presented_after_d: Vec<String> = site.seen().into_iter().skip_while(|t| *t != d).collect();
    assert!(
        presented_after_d.iter().all(|t| *t == d),
        "an expired token was presented after the refresh"
    );
    assert_eq!(report_luns(&srv), vec![0]);
    drop(srv);

    // No token, in any part, reaches the log, even at trace level.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 50,
        "trace logging produced little:\n{text}"
    );
    for t in [&a, &b, &c, &d] {
        for part in t.split('.').skip(1) {
            assert!(!text.contains(part), "a token part is in the log");
        }
    }

    // A command that hangs is killed at its timeout, and said so.
    let hang = site.path("hang.sh");
    std::fs::write(&hang, "exec sleep 601.25\n").unwrap();
    let cfg = site.config(
        "hang.toml",
        &format!(
            "ims_token_command = [\"/bin/sh\", \"{}\"]\nims_token_timeout_secs = 1\nca_file = \"{}\"\n",
            hang.display(),
            site.ca.display()
        ),
    );
    let (text, took) = catalog(&cfg);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        text.contains("ims_token") && text.contains("did not finish within 1 s"),
        "{text}"
    );
    // Killed, not left behind.
    let stray = Command::new("pgrep")
        .args(["-f", "sleep 601.25"])
        .output()
        .unwrap();
    assert!(stray.stdout.is_empty(), "the hung token command still runs");
    // A command that fails, or prints nothing: one clear line each.
    for (script, want) in [("exit 3\n", "failed"), ("true\n", "printed no token")] {
        let p = site.path("bad.sh");
        std::fs::write(&p, script).unwrap();
        let cfg = site.config(
            "bad.toml",
            &format!(
                "ims_token_command = [\"/bin/sh\", \"{}\"]\nca_file = \"{}\"\n",
                p.display(),
                site.ca.display()
            ),
        );
        let (text, _) = catalog(&cfg);
        assert!(text.contains("ims_token") && text.contains(want), "{text}");
    }
}

/// The old agent's project rules, one fixture case each
/// (`protocol-tests/fixtures/ims/agent-rules.json`): IMS records and their manifests
/// in moto, listed by the HTTPS IMS stand-in, and the set `s3lun catalog` projects.
#[test]
fn the_old_agents_project_rules_case_by_case() {
    let site = site();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("protocol-tests/fixtures/ims/agent-rules.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    let d = site.dir.path();
    let mut records = Vec::new();
    let mut want = std::collections::BTreeSet::new();
    // Image id -> (its rootfs URL, ETag, data): duplicates name another's rootfs.
    let mut objects = std::collections::HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        let rec = &c["record"];
        let id = rec["id"].as_str().unwrap();
        let mut data = pattern((1 << 20) + i, 100 + i as u64);
        let mut rootfs = format!("s3://boot-images/{id}/rootfs");
        let etag = match c["object"].as_str() {
            Some("match") => site
                .moto
                .put(d, "boot-images", &format!("{id}/rootfs"), &data, &[]),
            Some("shared") => {
                let of = c["rootfs_of"].as_str().expect("rootfs_of");
                let (url, etag, bytes): &(String, String, Vec<u8>) = &objects[of];
                (rootfs, data) = (url.clone(), bytes.clone());
                etag.clone()
            }
            _ => "00000000000000000000000000000000".to_string(),
        };
        objects.insert(id.to_string(), (rootfs.clone(), etag.clone(), data.clone()));
        let md5 = {
            use md5::{Digest, Md5};
            hex::encode(Md5::digest(&data))
        };
        let fill = |s: &str| {
            s.replace("@ID@", id)
                .replace("@ROOTFS@", &rootfs)
                .replace("@ETAG@", &etag)
                .replace("@MD5@", &md5)
        };
        match &c["manifest"] {
            serde_json::Value::Null => {}
            serde_json::Value::String(raw) => {
                site.moto.put(
                    d,
                    "boot-images",
                    &format!("{id}/manifest.json"),
                    raw.as_bytes(),
                    &[],
                );
            }
            m => {
                site.moto.put(
                    d,
                    "boot-images",
                    &format!("{id}/manifest.json"),
                    fill(&m.to_string()).as_bytes(),
                    &[],
                );
            }
        }
        records.push(rec.clone());
        if c["projected"] == true {
            want.insert(id.to_string());
        }
        // Where s3lun and the agent part, the fixture says why.
        if c["projected"] != c["agent"] {
            assert!(
                c["difference"].as_str().is_some_and(|s| !s.is_empty()),
                "{id}: differs from the agent without a reason"
            );
        }
    }
    // IMS lists by id: a duplicate that names the object worse comes first.
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    std::fs::write(d.join("images.json"), serde_json::to_vec(&records).unwrap()).unwrap();
    std::fs::write(site.path("valid-tokens"), "t0ken\n").unwrap();
    std::fs::write(site.path("token"), "t0ken\n").unwrap();
    let cfg = site.config(
        "rules.toml",
        &format!(
            "ims_token_file = \"{}\"\nca_file = \"{}\"\n",
            site.path("token").display(),
            site.ca.display()
        ),
    );
    let (text, _) = catalog(&cfg);
    let got: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.split_once("\tims\t"))
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(got, want, "projected set:\n{text}");
    // The one with two rootfs artifacts serves the last (with its etag).
    let line = text
        .lines()
        .find(|l| l.starts_with("two-rootfs\t"))
        .unwrap();
    assert!(
        line.contains("s3://boot-images/two-rootfs/rootfs"),
        "{line}"
    );
    for (id, kind) in [
        ("etag-mismatch", "etag_mismatch"),
        ("no-object", "missing_object"),
        ("bad-manifest", "invalid_json"),
        ("no-rootfs", "no_rootfs"),
        ("no-manifest", "manifest_unreadable"),
        ("dup-a-bare", "duplicate"),
        ("dup-c-same", "duplicate"),
    ] {
        assert!(
            text.contains(&format!("SKIPPED\t{id}\t{kind}")),
            "{id} {kind}:\n{text}"
        );
    }
}

/// S3 over HTTPS signed by the site's CA: `[s3] ca_file` makes it work (the image is
/// served byte for byte); without it, `s3lun check` names the TLS failure.
#[test]
fn s3_over_https_with_the_site_ca() {
    use common::raw::Raw;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, cert, key) = site_ca(d);
    let moto = Moto::start_tls(&cert, &key, &ca);
    moto.ctl(&["mkbucket", "boot-images"]);
    let data = pattern(1 << 20, 77);
    moto.put(d, "boot-images", "PE/tls.squashfs", &data, &[]);
    let config = |name: &str, ca_line: &str| {
        let p = d.join(name);
        std::fs::write(
            &p,
            format!(
                "[s3]\nendpoint = \"{}\"\naccess_key = \"test\"\nsecret_key = \"test\"\nattempts = 1\ndeadline_secs = 5\n{ca_line}[cache]\ndir = \"{}\"\n[[lun]]\ns3 = \"s3://boot-images/PE/tls.squashfs\"\n",
                moto.endpoint,
                d.join("cache").display()
            ),
        )
        .unwrap();
        p
    };
    let with = config("with.toml", &format!("ca_file = \"{}\"\n", ca.display()));
    let without = config("without.toml", "");
    let check = |cfg: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_s3lun"))
            .args(["check", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, text) = check(&with);
    assert!(ok, "{text}");
    let (ok, text) = check(&without);
    assert!(!ok, "{text}");
    assert!(
        text.contains("problem: [[lun]] s3 s3://boot-images/PE/tls.squashfs"),
        "{text}"
    );
    let srv = Server::start(&["--config", with.to_str().unwrap()]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(common::TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    r.read_checked(&data, 0, 64);
    r.read_checked(&data, 2000, 48);
}
