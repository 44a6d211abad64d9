//! A single-node Ceph RGW (`scripts/rgw`) under a temporary directory, for the
//! tests that need the S3 sites run.

use std::path::PathBuf;
use std::process::Command;

/// A cluster under a temporary directory, stopped on drop.
pub struct Rgw {
    dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Rgw {
    pub fn start() -> Rgw {
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rgw");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("scripts/rgw");
        let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && endpoint.starts_with("http://"),
            "scripts/rgw start: {}{}",
            endpoint,
            String::from_utf8_lossy(&out.stderr)
        );
        Rgw { dir, endpoint }
    }
}

impl Drop for Rgw {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rgw");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
