//! Instances of a fleet under test: a config that scans prefixes every second and
//! numbers through the shared LUN map, what an instance presents (LUN numbers and
//! their VPD 0x83 as libiscsi prints it), and waiting for a condition.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::{report_luns, run, Server};

pub const BUCKET: &str = "boot-images";
pub const MAP_KEY: &str = ".s3lun/lunmap.json";

/// An instance `name` of S3 at `endpoint`, scanning `prefixes` of the bucket every
/// second, numbering through the shared map; `extra` goes to the top of the file.
/// One attempt of at most 2 s per S3 request (3 s per read): an S3 that goes away
/// shows within a scan.
pub fn config(dir: &Path, name: &str, endpoint: &str, prefixes: &[&str], extra: &str) -> PathBuf {
    let list: Vec<String> = prefixes
        .iter()
        .map(|p| format!("\"s3://{BUCKET}/{p}\""))
        .collect();
    let text = format!(
        "state_file = \"{state}\"\n{extra}\n[s3]\nendpoint = \"{endpoint}\"\naccess_key = \"test\"\n\
         secret_key = \"test\"\nattempts = 1\ndeadline_secs = 3\nattempt_timeout_secs = 2\n\
         [cache]\ndir = \"{cache}\"\nchunk_size = 65536\nreadahead_chunks = 0\n\
         [catalog]\nprefixes = [{list}]\nrefresh_secs = 1\nretire_after_secs = 4\n\
         [lunmap]\ns3 = \"s3://{BUCKET}/{MAP_KEY}\"\n",
        state = dir.join(format!("{name}-state/luns.json")).display(),
        cache = dir.join(format!("{name}-cache")).display(),
        list = list.join(", "),
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("write config");
    p
}

/// LUN number -> VPD page 0x83 as libiscsi's iscsi-inq prints it.
pub fn identities(srv: &Server) -> Vec<(u32, String)> {
    report_luns(srv)
        .into_iter()
        .map(|l| (l, run("iscsi-inq", &["-e", "1", "-c", "131", &srv.url(l)])))
        .collect()
}
