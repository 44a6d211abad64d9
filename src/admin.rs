//! The admin socket: a Unix socket (mode 0600, so only its owner, root on a worker,
//! can use it; never on the network) taking one command per connection and
//! answering one line. `s3lun admin` is its client.
//!
//! Commands: `alua <state>` (active-optimized, active-non-optimized, standby,
//! unavailable, transitioning), `drain`, `state`, `reload` (as SIGHUP: the config
//! re-read and the catalog rescanned), `purge [content-key]` (cached chunks dropped
//! from memory and disk; reads fetch them again).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::scsi::AccessState;

/// The longest command line we read.
const MAX_LINE: usize = 256;
/// A client gets this long to send its command.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Alua(AccessState),
    Drain,
    State,
    Reload,
    /// Purge one content key's chunks, or all.
    Purge(Option<String>),
}

/// A command and where its one-line answer goes.
#[derive(Debug)]
pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["alua", state] => AccessState::parse(state).map(Command::Alua).ok_or_else(|| {
            let names: Vec<&str> = AccessState::ALL.iter().map(|a| a.name()).collect();
            format!("unknown ALUA state {state:?}: one of {}", names.join(", "))
        }),
        ["drain"] => Ok(Command::Drain),
        ["state"] => Ok(Command::State),
        ["reload"] => Ok(Command::Reload),
        ["purge"] => Ok(Command::Purge(None)),
        ["purge", key] => Ok(Command::Purge(Some(key.to_string()))),
        _ => Err(format!(
            "unknown command {:?}: alua <state>, drain, state, reload or purge [key]",
            line.trim()
        )),
    }
}

/// Bind the socket (replacing a stale one a dead process left) and serve it,
/// handing each command to `tx`.
pub fn listen(path: &Path, tx: mpsc::Sender<Request>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket nobody answers on is left over from a process that died: replace it.
    // One that answers belongs to a live instance: leave it alone.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("{} is in use by a running s3lun", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    info!(socket = %path.display(), "admin socket");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, tx.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<Request>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_LINE as u64));
    let mut line = String::new();
    let read = tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line)).await;
    let out = match read {
        Ok(Ok(_)) => match parse(&line) {
            Ok(command) => {
                let (reply, rx) = oneshot::channel();
                match tx.send(Request { command, reply }).await {
                    Ok(()) => rx.await.unwrap_or_else(|_| "error: shutting down".into()),
                    Err(_) => "error: shutting down".into(),
                }
            }
            Err(e) => format!("error: {e}"),
        },
        _ => "error: no command".into(),
    };
    let _ = wr.write_all(format!("{out}\n").as_bytes()).await;
}

/// The `s3lun admin` client: send `words` as one command, return the answer line.
pub fn call(path: &Path, words: &[String]) -> anyhow::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    writeln!(s, "{}", words.join(" "))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_why_not() {
        assert_eq!(
            parse("alua standby\n"),
            Ok(Command::Alua(AccessState::Standby))
        );
        assert_eq!(parse("drain"), Ok(Command::Drain));
        assert_eq!(parse("reload\n"), Ok(Command::Reload));
        assert_eq!(parse("purge"), Ok(Command::Purge(None)));
        assert_eq!(
            parse("purge etag:abc"),
            Ok(Command::Purge(Some("etag:abc".into())))
        );
        assert!(parse("alua sideways")
            .unwrap_err()
            .contains("active-optimized"));
        assert!(parse("reboot").is_err());
        assert!(parse("").is_err());
    }
}
