//! The admin socket: a Unix socket (mode 0600 from its creation, in a directory
//! only its owner may write, so only its owner can use it; never on the network)
//! taking one command per connection and answering one line. One per instance:
//! by default `/run/s3lun/admin-<port>.sock`. `s3lun admin` is its client.
//!
//! Commands: `alua <state>` (active-optimized, active-non-optimized, standby,
//! unavailable, transitioning), `drain`, `state`, `reload` (as SIGHUP: the config
//! re-read and the catalog rescanned), `purge [content-key]` (cached chunks dropped
//! from memory and disk; reads fetch them again).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
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

/// Where the admin socket is when `admin_socket` is not set: one per instance,
/// named by the port of its first portal (two instances cannot share a port).
pub fn default_path(port: u16) -> PathBuf {
    PathBuf::from(format!("{DEFAULT_DIR}/admin-{port}.sock"))
}

/// The directory `s3lun admin` looks in when given no socket.
pub const DEFAULT_DIR: &str = "/run/s3lun";

/// The socket's directory: created 0700 if missing; refused if another user owns
/// it or others may write to it (they could put their own socket in its place).
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display())),
        Err(e) => Err(e).with_context(|| format!("checking {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", dir.display()),
        Ok(m) => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if m.uid() != me && m.uid() != 0 {
                bail!(
                    "{} belongs to uid {}, not to this process (uid {me}) or root",
                    dir.display(),
                    m.uid()
                );
            }
            if m.mode() & 0o022 != 0 {
                bail!(
                    "{} is writable by others (mode {:o}): a socket there could be replaced",
                    dir.display(),
                    m.mode() & 0o7777
                );
            }
            Ok(())
        }
    }
}

/// What is at `path` now: nothing, or a stale socket (removed). A live socket, or
/// anything that is not a socket, is left alone with the reason.
fn clear(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("checking {}", path.display())),
        Ok(m) if m.file_type().is_socket() => {
            // A socket nobody answers on is left over from a process that died:
            // replace it. One that answers belongs to a live instance.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("{} is in use by a running s3lun", path.display());
            }
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(m) => bail!(
            "{} exists and is not a socket ({:?}): left alone; remove it or set admin_socket",
            path.display(),
            m.file_type()
        ),
    }
}

/// The bound admin socket; removed when dropped (the process stops).
#[derive(Debug)]
pub struct Bound {
    path: PathBuf,
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind the socket (replacing a stale one a dead process left, never anything
/// else) and serve it, handing each command to `tx`. It is created under a umask
/// that leaves it 0600 from its first instant.
pub fn listen(path: &Path, tx: mpsc::Sender<Request>) -> anyhow::Result<Bound> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_dir(dir)?;
    }
    clear(path)?;
    // SAFETY: umask only swaps the process's file creation mask; the old one is put
    // back right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
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
    Ok(Bound {
        path: path.to_path_buf(),
    })
}

/// The socket `s3lun admin` talks to: the one given, else the config's (or its
/// default for the config's first portal), else the only one in [`DEFAULT_DIR`].
pub fn find(socket: Option<PathBuf>, configured: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(s) = socket.or(configured) {
        return Ok(s);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(DEFAULT_DIR)
        .with_context(|| format!("no --socket, and {DEFAULT_DIR} cannot be read"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("no admin socket in {DEFAULT_DIR}: is s3lun running? (or pass --socket)"),
        _ => bail!(
            "{} admin sockets in {DEFAULT_DIR}: pass --socket or --config ({})",
            found.len(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
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

    #[tokio::test]
    async fn the_socket_is_private_from_birth_and_nothing_else_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/admin.sock");
        let (tx, _rx) = mpsc::channel(1);
        let bound = listen(&path, tx.clone()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700, "the directory it made");
        // A second instance at the same path: refused, the first stays.
        assert!(listen(&path, tx.clone())
            .unwrap_err()
            .to_string()
            .contains("in use"));
        drop(bound);
        assert!(!path.exists(), "removed at exit");
        // A regular file is never removed.
        std::fs::write(&path, b"precious").unwrap();
        let e = listen(&path, tx.clone()).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        // A directory others may write to is refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = listen(&open.join("a.sock"), tx).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        // The process's umask is back as it was.
        let now = unsafe { libc::umask(0o022) };
        unsafe { libc::umask(now) };
        assert_ne!(now, 0o177);
    }

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
