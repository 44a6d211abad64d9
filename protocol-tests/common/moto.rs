//! A real S3 server for tests: moto's `moto_server` from the venv the README's test
//! command installs, on an ephemeral loopback port, stopped on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn venv_bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/test, which installs moto into target/venv",
        p.display()
    );
    p
}

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
    /// The CA its TLS certificate is signed by (HTTPS only), for the helper's client.
    ca: Option<PathBuf>,
}

impl Moto {
    pub fn start() -> Moto {
        let port = super::free_port();
        Moto::start_on(port)
    }

    /// A handle on an S3 server that runs already (Ceph RGW, see `scripts/rgw`): the
    /// same helpers, nothing to stop.
    pub fn attach(endpoint: &str) -> Moto {
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("endpoint port");
        Moto {
            child: None,
            port,
            endpoint: endpoint.to_string(),
            ca: None,
        }
    }

    pub fn start_on(port: u16) -> Moto {
        Moto::spawn(port, None)
    }

    /// moto over HTTPS with `cert` and `key` (PEM), signed by `ca`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Moto {
        Moto::spawn(super::free_port(), Some((cert, key, ca)))
    }

    fn spawn(
        port: u16,
        tls: Option<(&std::path::Path, &std::path::Path, &std::path::Path)>,
    ) -> Moto {
        let mut cmd = Command::new(venv_bin("moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((cert, key, _)) = tls {
            cmd.arg("-c").arg(cert).arg("-k").arg(key);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        super::wait_listening(port, "moto_server");
        let scheme = if tls.is_some() { "https" } else { "http" };
        Moto {
            child: Some(child),
            port,
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            ca: tls.map(|(_, _, ca)| ca.to_path_buf()),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Upload `data` as `bucket/key` (through a file in `dir`); returns the ETag.
    pub fn put(
        &self,
        dir: &std::path::Path,
        bucket: &str,
        key: &str,
        data: &[u8],
        flags: &[&str],
    ) -> String {
        let f = dir.join(format!("upload-{bucket}-{}", key.replace('/', "_")));
        std::fs::write(&f, data).expect("write upload");
        let mut args = vec!["put", bucket, key, f.to_str().expect("utf8 path")];
        args.extend_from_slice(flags);
        self.ctl(&args)
    }

    /// Run the s3ctl helper; its stdout, or `None` if it failed (an absent key).
    pub fn try_ctl(&self, args: &[&str]) -> Option<String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/s3/s3ctl.py");
        let out = Command::new(venv_bin("python3"))
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run the s3ctl helper; returns its stdout (the ETag for `put`).
    pub fn ctl(&self, args: &[&str]) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/s3/s3ctl.py");
        let mut cmd = Command::new(venv_bin("python3"));
        if let Some(ca) = &self.ca {
            cmd.env("AWS_CA_BUNDLE", ca);
        }
        let out = cmd
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .expect("s3ctl");
        assert!(
            out.status.success(),
            "s3ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Scrape one counter from s3lun's metrics endpoint.
pub fn metric(port: u16, name: &str) -> u64 {
    let (v, text) = metric_text(port, name);
    v.unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
}

/// One counter, 0 while the endpoint does not list it yet (a labelled counter
/// appears with its first event).
pub fn metric_or_zero(port: u16, name: &str) -> u64 {
    metric_text(port, name).0.unwrap_or(0)
}

fn metric_text(port: u16, name: &str) -> (Option<u64>, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("metrics endpoint: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok());
    (v, text)
}
