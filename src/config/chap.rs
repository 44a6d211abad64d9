//! The `[chap]` and `[discovery_chap]` sections: CHAP credentials.

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::login::{ChapPolicy, Credentials};

/// CHAP credentials. Secrets are plain text, or `0x` hex, or `0b` base64; they are
/// never logged.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    /// Name and secret the initiator must authenticate with.
    pub user: String,
    pub secret: String,
    /// Name and secret we answer with when the initiator asks for mutual CHAP.
    pub target_user: Option<String>,
    pub target_secret: Option<String>,
    /// Offer SHA-256 besides MD5.
    #[serde(default = "yes")]
    pub sha256: bool,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .field("target_user", &self.target_user)
            .finish_non_exhaustive()
    }
}

fn secret_bytes(s: &str) -> anyhow::Result<Vec<u8>> {
    if s.starts_with("0x") || s.starts_with("0b") {
        crate::login::chap::decode_binary(s).context("CHAP secret: bad hex or base64")
    } else {
        Ok(s.as_bytes().to_vec())
    }
}

impl ChapConfig {
    pub fn policy(&self) -> anyhow::Result<ChapPolicy> {
        let target = match (&self.target_user, &self.target_secret) {
            (Some(u), Some(s)) => Some(Credentials {
                user: u.clone(),
                secret: secret_bytes(s)?,
            }),
            (None, None) => None,
            _ => bail!("CHAP target_user and target_secret go together"),
        };
        let secret = secret_bytes(&self.secret)?;
        if secret.len() < 12 {
            // RFC 7143 section 12.1.3: secrets of at least 96 bits.
            bail!("CHAP secret for {} is shorter than 12 bytes", self.user);
        }
        Ok(ChapPolicy {
            initiator: Some(Credentials {
                user: self.user.clone(),
                secret,
            }),
            target,
            allow_sha256: self.sha256,
        })
    }
}
