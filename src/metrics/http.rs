//! The HTTP endpoint (`metrics_listen`): `/metrics` (Prometheus text), `/healthz`
//! (alive), `/readyz` (ready for new sessions), `/status` (JSON, see
//! [`super::status`]); any other path is 404. Read-only: what changes the target's
//! state goes through the admin socket, never the network.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::debug;

use super::Metrics;
use crate::server;

/// Connections the metrics listener serves at once; more are closed unread. A
/// scraper needs one; the bound keeps idle or hostile peers from taking descriptors
/// the iSCSI listener needs.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a metrics client gets to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The request line of one HTTP request: the path asked for.
fn requested_path(req: &[u8]) -> Option<&str> {
    let line = req.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path),
        _ => None,
    }
}

/// Answer one request.
async fn answer(mut sock: TcpStream, metrics: Metrics) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let mut have = 0;
    // Read until the end of the headers (or the buffer is full), within the timeout.
    let read = async {
        while have < buf.len() && !buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf[have..]).await?;
            if n == 0 {
                break;
            }
            have += n;
        }
        Ok::<_, std::io::Error>(())
    };
    timeout(IO_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let path = requested_path(&buf[..have]).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        // Alive: the process answers.
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" => match metrics.not_ready() {
            None => ("200 OK", "text/plain", "ready\n".to_string()),
            Some(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/status" => match serde_json::to_string_pretty(&super::status::Status::of(&metrics)) {
            Ok(json) => ("200 OK", "application/json", json + "\n"),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    timeout(IO_TIMEOUT, sock.write_all(resp.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer timed out"))?
}

/// Serve metrics on `listener`: at most [`MAX_CONNECTIONS`] at once, each bounded by
/// [`IO_TIMEOUT`], accept errors (out of descriptors) backed off.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (sock, peer) = server::accept(&listener).await;
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            debug!(%peer, "metrics connection refused: {MAX_CONNECTIONS} open");
            continue;
        }
        let m = metrics.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            if let Err(e) = answer(sock, m).await {
                debug!(%peer, error = %e, "metrics request");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::requested_path;

    #[test]
    fn request_line() {
        assert_eq!(
            requested_path(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(requested_path(b"POST /metrics HTTP/1.1\r\n"), None);
        assert_eq!(requested_path(b"\xff\xfe"), None);
        assert_eq!(requested_path(b""), None);
    }
}
