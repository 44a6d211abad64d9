//! The fault-injecting HTTP proxy (`protocol-tests/s3/faulty_proxy.py`) between
//! s3lun and moto: arm a fault for the next N ranged GETs, count the ones it broke.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        Proxy::start_on(super::free_port(), upstream)
    }

    /// On a given port: a proxy stopped and started again is S3 going away and back.
    pub fn start_on(port: u16, upstream: u16) -> Proxy {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/s3/faulty_proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .args([port.to_string(), upstream.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start faulty_proxy.py");
        super::wait_listening(port, "faulty_proxy.py");
        Proxy {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("proxy");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    }

    /// Break the next `count` ranged GETs (or PUTs, for `strip-conditions`) with
    /// `mode` (0 disarms).
    pub fn arm(&self, mode: &str, count: u32) {
        assert_eq!(self.get(&format!("/__fault__/{mode}/{count}")), "ok");
    }

    /// Break the next `count` ranged GETs of at least `min` bytes (read-ahead
    /// windows, not single chunks) with `mode`.
    pub fn arm_min(&self, mode: &str, count: u32, min: u64) {
        assert_eq!(self.get(&format!("/__fault__/{mode}/{count}/{min}")), "ok");
    }

    /// Ranged GETs broken so far.
    pub fn served(&self) -> u64 {
        self.get("/__fault__/served").trim().parse().expect("count")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
