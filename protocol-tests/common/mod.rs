//! Shared helpers for the protocol tests: start the real `s3lun` binary on an
//! ephemeral loopback port, make test images, and run the real initiator tools.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TARGET: &str = "iqn.2023-06.csm.iscsi:s3lun-test";

/// `serve` on an ephemeral loopback port as the test target, then `extra`.
fn serve_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--target-name", TARGET];
    if !extra.contains(&"--drain-timeout") {
        args.extend_from_slice(&["--drain-timeout", "3"]);
    }
    args.extend_from_slice(extra);
    args
}

/// A running s3lun, killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    pub port: u16,
    /// Helper processes that live and die with this server.
    pub companions: Vec<Child>,
}

impl Server {
    /// Start with `extra` after the usual arguments. A test target drains for at
    /// most 3 s on SIGTERM (unless `extra` says otherwise).
    pub fn start(extra: &[&str]) -> Server {
        Server::start_raw(&serve_args(extra))
    }

    /// Start from a config file, with metrics on a free port; returns that port too.
    pub fn start_config(cfg: &Path) -> (Server, u16) {
        let mport = free_port();
        let metrics = format!("127.0.0.1:{mport}");
        let cfg = cfg.to_str().expect("utf8 path");
        (
            Server::start(&["--config", cfg, "--metrics-listen", &metrics]),
            mport,
        )
    }

    /// Start from a config file with metrics on a free port, logging at `level` into
    /// `log`; returns that port too.
    pub fn start_config_logged(cfg: &Path, level: &str, log: &Path) -> (Server, u16) {
        let mport = free_port();
        let metrics = format!("127.0.0.1:{mport}");
        let cfg = cfg.to_str().expect("utf8 path");
        let args = ["--config", cfg, "--metrics-listen", &metrics];
        (Server::start_logged(&args, level, log), mport)
    }

    /// Start with exactly these arguments.
    pub fn start_raw(args: &[&str]) -> Server {
        Server::spawn(args, None)
    }

    /// Start with `extra` after the usual arguments, logging at `level` into `log`.
    pub fn start_logged(extra: &[&str], level: &str, log: &Path) -> Server {
        Server::spawn(&serve_args(extra), Some((level, log)))
    }

    fn spawn(args: &[&str], log: Option<(&str, &Path)>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3lun"));
        cmd.args(args).stdout(Stdio::piped());
        match log {
            Some((level, path)) => {
                let f = std::fs::File::create(path).expect("log file");
                cmd.env("RUST_LOG", level).stderr(f);
            }
            None => {
                cmd.env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stderr(Stdio::inherit());
            }
        }
        let mut child = cmd.spawn().expect("spawn s3lun");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        // Other announcements (metrics) may come first: wait for the iSCSI listener.
        let addr = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read s3lun stdout");
            assert!(n > 0, "s3lun exited before listening");
            if let Some(rest) = line.strip_prefix("s3lun: listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining stdout so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        Server {
            child,
            addr,
            port,
            companions: Vec::new(),
        }
    }

    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://{}/{}/{}", self.addr, TARGET, lun)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. "HUP") to the server.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Stop as an operator would (SIGTERM) and wait for the exit: what is still in
    /// flight, like chunks on their way to the disk cache, is finished first.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.alive() {
            assert!(
                std::time::Instant::now() < deadline,
                "s3lun did not exit on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kill without warning (SIGKILL), as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit code, once the process has exited.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for c in &mut self.companions {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fail loudly when a real peer is missing: the README's test command installs them.
/// The LUN numbers a target reports, as libiscsi's iscsi-ls lists them.
pub fn report_luns(srv: &Server) -> Vec<u32> {
    let ls = run("iscsi-ls", &["-s", &format!("iscsi://{}", srv.addr)]);
    ls.lines()
        .filter_map(|l| l.trim().strip_prefix("Lun:"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: run the README's test command (scripts/test), which installs it"
    );
}

pub fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(tool(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn write_image(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = pattern(len, seed);
    let p = dir.join(name);
    std::fs::write(&p, &data).expect("write image");
    (p, data)
}

/// A real squashfs made by mksquashfs, with a marker file inside.
pub fn make_squashfs(dir: &Path) -> (PathBuf, Vec<u8>) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(root.join("etc/marker"), b"s3lun-squashfs-marker\n").expect("marker");
    std::fs::write(root.join("big.bin"), pattern(3 * 1024 * 1024 + 77, 9)).expect("big");
    let img = dir.join("root.squashfs");
    run(
        "mksquashfs",
        &[
            root.to_str().expect("utf8"),
            img.to_str().expect("utf8"),
            "-noappend",
            "-no-progress",
            "-quiet",
            "-comp",
            "gzip",
        ],
    );
    let bytes = std::fs::read(&img).expect("read squashfs");
    (img, bytes)
}

/// A loopback port nobody listens on right now.
/// Wait until something listens on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// s3lun serving one generated image of `len` bytes as LUN 0, with `extra` flags.
pub fn serve_image(dir: &Path, len: usize, extra: &[&str]) -> (Server, Vec<u8>) {
    let (p, data) = write_image(dir, "img", len, 71);
    let mut args = vec!["--lun", p.to_str().expect("utf8 path")];
    args.extend_from_slice(extra);
    (Server::start(&args), data)
}

/// A `/proc/PID/status` field in kB (VmRSS:, RssAnon:...).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Wait until `f` holds, checking every 200 ms, at most `secs`.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A helper process of a test, killed on drop.
pub struct Helper(pub Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `s3lun-storm shape` in front of the S3 server on 127.0.0.1:`upstream`: first-byte
/// latency and one bandwidth shared by every answer, its counters in `stats`.
pub fn shaper(upstream: u16, latency_ms: u32, mbps: f64, stats: &Path) -> (Helper, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_s3lun-storm"))
        .args(["shape", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{upstream}")])
        .args(["--latency-ms", &latency_ms.to_string()])
        .args(["--mbps", &mbps.to_string()])
        .arg("--stats")
        .arg(stats)
        .stdout(Stdio::null())
        .spawn()
        .expect("s3lun-storm shape");
    wait_listening(port, "the shaper");
    (Helper(child), port)
}

pub mod faulty;
pub mod fleet;
pub mod moto;
pub mod raw;
pub mod rgw;

/// `s3lun cache --config CFG OP` (stats, verify, purge): its output; it must succeed.
pub fn cache_op(cfg: &Path, op: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_s3lun"))
        .args(["cache", "--config", cfg.to_str().expect("utf8 path"), op])
        .output()
        .expect("s3lun cache");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "s3lun cache {op}: {text}");
    text
}

/// `qemu-img convert` a LUN to a raw file; whether it succeeded.
pub fn convert(url: &str, out: &Path) -> bool {
    convert_cmd(url, out)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The `qemu-img convert` of a LUN to a raw file, to run or spawn.
pub fn convert_cmd(url: &str, out: &Path) -> Command {
    let mut c = Command::new(tool("qemu-img"));
    c.args(["convert", "-f", "raw", "-O", "raw", url]).arg(out);
    c
}

/// The converted LUN is the image, then zeros to the next 512-byte block.
pub fn check_image(out: &Path, image: &[u8]) {
    let got = std::fs::read(out).expect("read converted LUN");
    assert_eq!(got.len(), image.len().div_ceil(512) * 512, "converted size");
    assert!(
        got[..image.len()] == image[..],
        "bytes differ from the image"
    );
    assert!(
        got[image.len()..].iter().all(|&b| b == 0),
        "tail is not zero-filled"
    );
}

/// `GET path` from s3lun's HTTP listener on `port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("HTTP listener");
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read answer");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}
