//! The `[s3]` section: how to reach S3, and the credentials it is read with.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::store::s3::S3Settings;

/// How to reach S3.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://rgw-vip.nmn` (path-style addressing is always used).
    pub endpoint: String,
    pub region: String,
    /// Credentials: these, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else an
    /// s3fs-style passwd file (`ACCESS:SECRET` or `bucket:ACCESS:SECRET`).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub passwd_file: Option<PathBuf>,
    pub max_parallel: usize,
    pub attempts: u32,
    pub attempt_timeout_secs: u64,
    /// After this long a read fails with a retryable SCSI error.
    pub deadline_secs: u64,
    /// PEM bundle of the site's CA, trusted for an https endpoint besides the
    /// system roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            access_key: None,
            secret_key: None,
            passwd_file: None,
            max_parallel: 32,
            attempts: 4,
            attempt_timeout_secs: 10,
            deadline_secs: 30,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    fn credentials(&self) -> anyhow::Result<(String, String)> {
        let env = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(a), Ok(s)) => Some((a, s)),
            _ => None,
        };
        self.credentials_with(env)
    }

    /// Credentials by precedence: the config, then the environment's, then the
    /// passwd file.
    pub(super) fn credentials_with(
        &self,
        env: Option<(String, String)>,
    ) -> anyhow::Result<(String, String)> {
        if let (Some(a), Some(s)) = (&self.access_key, &self.secret_key) {
            return Ok((a.clone(), s.clone()));
        }
        if let Some(pair) = env {
            return Ok(pair);
        }
        if let Some(p) = &self.passwd_file {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let parts: Vec<&str> = line.split(':').collect();
                match parts.as_slice() {
                    [a, s] | [_, a, s] => return Ok((a.to_string(), s.to_string())),
                    _ => {}
                }
            }
            bail!("no ACCESS:SECRET line in {}", p.display());
        }
        bail!("no S3 credentials: set [s3] access_key/secret_key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or passwd_file")
    }

    pub fn settings(&self) -> anyhow::Result<S3Settings> {
        let (access_key, secret_key) = self.credentials()?;
        Ok(S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key,
            secret_key,
            max_parallel: self.max_parallel,
            attempts: self.attempts,
            attempt_timeout: Duration::from_secs(self.attempt_timeout_secs.max(1)),
            deadline: Duration::from_secs(self.deadline_secs.max(1)),
            ca_pem: match &self.ca_file {
                // Checked here, so a bad file stops the start with its reason.
                Some(p) => Some(
                    crate::tls::load_pem(p)
                        .with_context(|| format!("[s3] ca_file {}", p.display()))?,
                ),
                None => None,
            },
        })
    }
}
