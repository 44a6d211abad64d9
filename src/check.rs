//! `s3lun check --config F`: everything about a configuration that can be checked
//! without serving, one line per problem. Addresses parse and belong to this host,
//! files exist, CHAP secrets are long enough, pinned LUN numbers are unique, S3
//! answers and its buckets are readable, the catalog's sources answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::scsi::logical_unit::MAX_LUN;
use crate::store::s3::{parse_url, S3Client};

/// The problems found in the configuration at `path` (none: it is good).
pub async fn check(path: &Path) -> Vec<String> {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        // A TOML error names the line, and the key for an unknown one.
        Err(e) => return vec![format!("{e:#}").replace('\n', " ")],
    };
    let mut p = Vec::new();
    if let Err(e) = cfg.validate() {
        p.push(format!("{e:#}"));
    }
    for a in &cfg.listen {
        if let Some(why) = local_address(a) {
            p.push(format!("listen {a:?}: {why}"));
        }
    }
    if let Some(a) = &cfg.metrics_listen {
        if let Some(why) = local_address(a) {
            p.push(format!("metrics_listen {a:?}: {why}"));
        }
    }
    files(&cfg, &mut p);
    if let Err(e) = cfg.login_settings() {
        p.push(format!("{e:#}"));
    }
    pinned(&cfg, &mut p);
    s3(&cfg, &mut p).await;
    p
}

/// Why `addr` cannot be listened on here (not `ip:port`, or not an address of this
/// host), if it cannot.
fn local_address(addr: &str) -> Option<String> {
    let sa: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => return Some("not ip:port (e.g. 10.1.0.5:3260 or [fd00::5]:3260)".into()),
    };
    // Port 0: whether the address is ours, not whether the port is free (a running
    // target holds it).
    match std::net::TcpListener::bind(SocketAddr::new(sa.ip(), 0)) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Some("not an address of this host".into())
        }
        Err(e) => Some(format!("cannot bind: {e}")),
    }
}

fn must_exist(what: &str, path: &Path, p: &mut Vec<String>) {
    if let Err(e) = std::fs::metadata(path) {
        p.push(format!("{what} {}: {e}", path.display()));
    }
}

fn files(cfg: &Config, p: &mut Vec<String>) {
    for l in &cfg.luns {
        if let Some(path) = &l.path {
            match std::fs::File::open(path) {
                Ok(_) => {}
                Err(e) => p.push(format!("[[lun]] path {}: {e}", path.display())),
            }
        }
        if l.path.is_none() && l.s3.is_none() {
            p.push("[[lun]] with neither path nor s3".into());
        }
    }
    if let Some(f) = cfg.s3.as_ref().and_then(|s| s.passwd_file.as_ref()) {
        must_exist("[s3] passwd_file", f, p);
    }
    if let Some(f) = &cfg.catalog.ims_token_file {
        must_exist("[catalog] ims_token_file", f, p);
    }
    if let Some(f) = &cfg.state_file {
        if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
            must_exist("state_file directory", dir, p);
        }
    }
    if let Some(dir) = &cfg.cache.dir {
        // Created at start if missing; its parent must be there.
        if std::fs::metadata(dir).is_err() {
            if let Some(parent) = dir.parent() {
                must_exist("[cache] dir's parent", parent, p);
            }
        }
    }
}

fn pinned(cfg: &Config, p: &mut Vec<String>) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for l in &cfg.luns {
        if let Some(n) = l.lun {
            *seen.entry(n).or_default() += 1;
            if n > MAX_LUN {
                p.push(format!("[[lun]] lun = {n} is above {MAX_LUN}"));
            }
        }
    }
    for (n, count) in seen.into_iter().filter(|(_, c)| *c > 1) {
        p.push(format!("LUN {n} is pinned by {count} [[lun]] entries"));
    }
}

/// S3 answers with the credentials given, and every bucket and object named is
/// readable; the catalog's sources answer.
async fn s3(cfg: &Config, p: &mut Vec<String>) {
    let needs = cfg.luns.iter().any(|l| l.s3.is_some())
        || !cfg.catalog.is_empty()
        || cfg.lunmap.s3.is_some();
    let Some(s3cfg) = &cfg.s3 else {
        if needs {
            p.push("S3 images or a catalog are configured but no [s3] section".into());
        }
        return;
    };
    let settings = match s3cfg.settings() {
        Ok(s) => s,
        Err(e) => return p.push(format!("[s3]: {e:#}")),
    };
    let client = S3Client::new(&settings);
    // Buckets, each with the prefix it is read under.
    let mut buckets: BTreeSet<(String, String)> = BTreeSet::new();
    for b in &cfg.catalog.manifest_buckets {
        buckets.insert((b.clone(), String::new()));
    }
    for url in cfg.catalog.prefixes.iter().chain(&cfg.lunmap.s3) {
        match parse_url(url) {
            Some((b, k)) => {
                buckets.insert((b, k));
            }
            None => p.push(format!("{url:?} is not s3://bucket/prefix")),
        }
    }
    for (b, prefix) in &buckets {
        if let Err(e) = client.can_list(b, prefix).await {
            p.push(format!("S3 ({}): {e}", settings.endpoint));
        }
    }
    for l in &cfg.luns {
        let Some(url) = &l.s3 else { continue };
        match parse_url(url) {
            Some((b, k)) => {
                if let Err(e) = client.head(&b, &k).await {
                    p.push(format!("[[lun]] s3 {url}: {e}"));
                }
            }
            None => p.push(format!("[[lun]] s3 = {url:?} is not s3://bucket/key")),
        }
    }
    if cfg.catalog.ims_url.is_some() {
        let scan = crate::catalog::scan(
            &client,
            &cfg.catalog,
            &HashMap::new(),
            &mut Default::default(),
        )
        .await;
        for f in scan.failed_sources {
            p.push(format!("catalog source {f} does not answer"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_ours() {
        assert_eq!(local_address("127.0.0.1:3260"), None);
        assert!(local_address("localhost").is_some());
        // TEST-NET-3: never assigned to a host.
        assert_eq!(
            local_address("203.0.113.7:3260").as_deref(),
            Some("not an address of this host")
        );
    }
}
