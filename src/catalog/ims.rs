//! The IMS source: the image list from an IMS-style API over HTTP(S), authenticated
//! with a bearer token that is read from a file each scan or printed by a command
//! (the SPIRE agent's JWT fetch), trusted through the system roots plus a site CA.
//!
//! A token from a command is kept until its JWT `exp` (less a margin), so a scan
//! every few minutes does not fork the agent each time; one without `exp` is fetched
//! again each scan. Tokens are never logged.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use thiserror::Error;
use tracing::debug;

use crate::config::CatalogConfig;
use crate::store::served::unix_now;

/// A token is fetched again this long before its `exp`.
const EXPIRY_MARGIN_SECS: u64 = 60;
/// The largest image list read.
const MAX_LIST_BYTES: u64 = 256 << 20;

#[derive(Debug, Error)]
pub enum ImsError {
    #[error("token command: {0}")]
    TokenCommand(String),
    #[error("token file {path}: {msg}")]
    TokenFile { path: String, msg: String },
    #[error("ca_file {path}: {msg}")]
    CaFile { path: String, msg: String },
    #[error("GET {url}: TLS: {msg}")]
    Tls { url: String, msg: String },
    #[error("GET {url}: HTTP {status} (the token was refused)")]
    Refused { url: String, status: u16 },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: {msg}")]
    Unreachable { url: String, msg: String },
    #[error("IMS answer is not an image list: {0}")]
    Json(String),
}

impl ImsError {
    /// The `catalog_problems` label.
    pub fn kind(&self) -> &'static str {
        match self {
            ImsError::TokenCommand(_) | ImsError::TokenFile { .. } => "ims_token",
            ImsError::CaFile { .. } | ImsError::Tls { .. } => "ims_tls",
            ImsError::Refused { .. } => "ims_auth",
            ImsError::Status { .. } => "ims_http",
            ImsError::Unreachable { .. } => "ims_unreachable",
            ImsError::Json(_) => "ims_json",
        }
    }
}

/// Why an IMS record is not projected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotProjected {
    /// No `link.path` (no link, a null link, a link without a path).
    NoLink,
    /// `metadata` present without `sbps-project`, or with another value than the
    /// string "true" (the agent compares exactly; `true` as a JSON bool is not it).
    NotTagged,
}

/// The old agent's rule for one IMS image record: its (image id, manifest URL) when
/// it is projected. With `require_tag` (the agent's IMS_TAGGING, on by default), a
/// record with `metadata` must carry `"sbps-project": "true"`; one without
/// `metadata` at all (an IMS too old for tags) is projected. A null `metadata`,
/// which crashed the agent, counts as present without the tag.
pub fn projected(rec: &serde_json::Value, require_tag: bool) -> Result<ImsManifest, NotProjected> {
    let link = rec.get("link");
    let path = link
        .and_then(|l| l.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .ok_or(NotProjected::NoLink)?;
    if require_tag {
        if let Some(meta) = rec.get("metadata") {
            let tag = meta.get("sbps-project").and_then(|t| t.as_str());
            if tag != Some("true") {
                return Err(NotProjected::NotTagged);
            }
        }
    }
    let id = rec
        .get("id")
        .and_then(|i| i.as_str())
        .map_or_else(|| path.to_string(), str::to_string);
    let etag = link
        .and_then(|l| l.get("etag"))
        .and_then(|e| e.as_str())
        .map(|e| e.trim_matches('"').to_string())
        .filter(|e| !e.is_empty());
    Ok(ImsManifest {
        id,
        url: path.to_string(),
        etag,
    })
}

/// A manifest IMS lists for projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImsManifest {
    pub id: String,
    /// `s3://bucket/key` of the manifest.
    pub url: String,
    /// The manifest object's ETag as IMS recorded it: a scan that finds it unchanged
    /// does not read the manifest again.
    pub etag: Option<String>,
}

/// A token a command printed, and until when it may be used (unix seconds).
#[derive(Debug, Clone)]
struct Cached {
    command: Vec<String>,
    token: String,
    until: u64,
}

/// The last token from a command (one IMS source per process).
static TOKEN: Mutex<Option<Cached>> = Mutex::new(None);

/// The `exp` claim of a JWT, if the token is one and has it.
fn jwt_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// Run `command` (no shell) for a token: its stdout, trimmed. Killed at `timeout`.
async fn run_token_command(command: &[String], timeout: Duration) -> Result<String, ImsError> {
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| ImsError::TokenCommand("ims_token_command is empty".into()))?;
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImsError::TokenCommand(format!("{prog}: {e}")))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            return Err(ImsError::TokenCommand(format!(
                "{prog} did not finish within {} s: killed",
                timeout.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(ImsError::TokenCommand(format!("{prog}: {e}"))),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        // Its stderr says why (a token goes to stdout, never logged).
        let err = String::from_utf8_lossy(&out.stderr);
        let err: String = err.trim().chars().take(200).collect();
        return Err(ImsError::TokenCommand(format!(
            "{prog} failed ({}): {err}",
            out.status
        )));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if token.is_empty() {
        return Err(ImsError::TokenCommand(format!("{prog} printed no token")));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImsError::TokenCommand(format!(
            "{prog} printed more than one token (whitespace in its output)"
        )));
    }
    Ok(token)
}

/// The bearer token for this scan, if one is configured.
async fn token(cfg: &CatalogConfig) -> Result<Option<String>, ImsError> {
    if let Some(command) = &cfg.ims_token_command {
        let now = unix_now();
        let cached = TOKEN.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = cached.filter(|c| &c.command == command && now < c.until) {
            return Ok(Some(c.token));
        }
        let timeout = Duration::from_secs(cfg.ims_token_timeout_secs.max(1));
        let token = run_token_command(command, timeout).await?;
        let until = jwt_expiry(&token).map_or(0, |exp| exp.saturating_sub(EXPIRY_MARGIN_SECS));
        *TOKEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            command: command.clone(),
            token: token.clone(),
            until,
        });
        return Ok(Some(token));
    }
    match &cfg.ims_token_file {
        Some(p) => std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| ImsError::TokenFile {
                path: p.display().to_string(),
                msg: e.to_string(),
            }),
        None => Ok(None),
    }
}

fn agent(ca_file: Option<&PathBuf>) -> Result<ureq::Agent, ImsError> {
    let mut b = ureq::AgentBuilder::new().timeout(Duration::from_secs(30));
    if let Some(ca) = ca_file {
        let config = crate::tls::with_ca(ca).map_err(|e| ImsError::CaFile {
            path: ca.display().to_string(),
            msg: e.to_string(),
        })?;
        b = b.tls_config(config);
    }
    Ok(b.build())
}

/// What a failed GET was: refused, another status, TLS, or no answer.
fn classify(url: &str, e: ureq::Error) -> ImsError {
    let url = url.to_string();
    match e {
        ureq::Error::Status(status @ (401 | 403), _) => ImsError::Refused { url, status },
        ureq::Error::Status(status, _) => ImsError::Status { url, status },
        ureq::Error::Transport(t) => {
            let msg = t.to_string();
            // rustls errors (unknown issuer, bad name) come through as I/O errors.
            let tls = msg.contains("certificate")
                || msg.contains("InvalidCertificate")
                || msg.contains("tls")
                || msg.contains("TLS");
            match tls {
                true => ImsError::Tls { url, msg },
                false => ImsError::Unreachable { url, msg },
            }
        }
    }
}

/// The manifests of the IMS images projected.
pub async fn manifests(url: &str, cfg: &CatalogConfig) -> Result<Vec<ImsManifest>, ImsError> {
    let result = list(url, cfg).await;
    if let Err(ImsError::Refused { .. }) = &result {
        // A refused token is not used again: the next scan asks the command anew.
        *TOKEN.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    result
}

async fn list(url: &str, cfg: &CatalogConfig) -> Result<Vec<ImsManifest>, ImsError> {
    let token = token(cfg).await?;
    let agent = agent(cfg.ca_file.as_ref())?;
    let url = url.to_string();
    let body = tokio::task::spawn_blocking(move || {
        let mut req = agent.get(&url);
        if let Some(t) = &token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| classify(&url, e))?;
        let mut body = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(resp.into_reader(), MAX_LIST_BYTES),
            &mut body,
        )
        .map_err(|e| ImsError::Unreachable {
            url: url.clone(),
            msg: format!("reading the answer: {e}"),
        })?;
        Ok::<_, ImsError>(body)
    })
    .await
    .map_err(|e| ImsError::Unreachable {
        url: String::new(),
        msg: e.to_string(),
    })??;
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&body).map_err(|e| ImsError::Json(e.to_string()))?;
    let mut out = Vec::new();
    for rec in &records {
        match projected(rec, cfg.ims_require_tag) {
            Ok(p) => out.push(p),
            Err(why) => debug!(id = ?rec.get("id"), ?why, "IMS image not projected"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_tag_rule() {
        use serde_json::json;
        let link = json!({"path": "s3://boot-images/a/manifest.json", "etag": "x", "type": "s3"});
        let rec = |extra: serde_json::Value| {
            let mut r = json!({"id": "a", "link": link});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            r
        };
        let yes = |r: serde_json::Value| projected(&r, true).is_ok();
        assert!(yes(rec(json!({"metadata": {"sbps-project": "true"}}))));
        assert!(yes(rec(json!({}))), "no metadata: an IMS without tags");
        assert!(!yes(rec(json!({"metadata": {}}))));
        assert!(!yes(rec(
            json!({"metadata": {"annotations": [{"key": "sbps-project", "value": "true"}]}})
        )));
        assert!(!yes(rec(json!({"metadata": {"sbps-project": "True"}}))));
        assert!(!yes(rec(json!({"metadata": {"sbps-project": true}}))));
        assert!(!yes(rec(json!({"metadata": {"sbps-project": "false"}}))));
        assert!(!yes(rec(json!({"metadata": null}))));
        assert!(
            projected(&rec(json!({"metadata": {}})), false).is_ok(),
            "tagging off"
        );
        assert_eq!(
            projected(&json!({"id": "b", "link": null}), true),
            Err(NotProjected::NoLink)
        );
        assert_eq!(
            projected(&json!({"id": "b", "link": {"etag": "x"}}), true),
            Err(NotProjected::NoLink)
        );
        assert_eq!(projected(&json!("junk"), true), Err(NotProjected::NoLink));
    }

    #[test]
    fn expiry_from_a_jwt() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"spiffe://shasta/ncn/workload/sbps-marshal","exp":1893456000}"#);
        assert_eq!(
            jwt_expiry(&format!("eyJhbGciOiJFUzI1NiJ9.{claims}.sig")),
            Some(1_893_456_000)
        );
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }
}
