//! The HTTP listener (`metrics_listen`): `/metrics` (Prometheus text), `/healthz`
//! (alive), `/readyz` (ready for new sessions), `/status` (JSON, see
//! [`super::status`]: loopback peers only unless `public_status`); any other path
//! is 404. Read-only: what changes the target's state goes through the admin
//! socket, never the network.
//!
//! It runs on a thread and runtime of its own, so a scrape never takes a worker of
//! the I/O runtime, and a render runs on a blocking thread of its own, so health
//! answers while `/metrics` is encoded. hyper parses requests and bounds the time a
//! peer gets to send its headers; connections are bounded in number, and when the
//! bound is reached the oldest one that has not sent a whole request (an idle or
//! slow peer) is closed to make room: strangers cannot starve `/readyz`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, error};

use super::{format, Metrics};
use crate::server;

/// Connections the listener holds at once. Past it, the oldest connection that
/// has not sent a whole request is closed for the new one.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client gets to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a connection lives in all (request, render, answer).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may read what.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access {
    /// `/status` (initiator names, ISIDs, addresses) for any peer, not only
    /// loopback ones.
    pub public_status: bool,
}

impl Access {
    /// Whether `/status` is answered to `peer`.
    pub fn status_for(&self, peer: std::net::IpAddr) -> bool {
        self.public_status || peer.is_loopback()
    }
}

/// Open connections, oldest first: whether each has sent a whole request, and how
/// to close it.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, (Arc<AtomicBool>, Arc<Notify>)>,
}

impl Open {
    /// Room for one more: closes the oldest idle connection if full; false when
    /// every connection is busy answering.
    fn make_room(&mut self) -> bool {
        if self.conns.len() < MAX_CONNECTIONS {
            return true;
        }
        let idle = self
            .conns
            .iter()
            .find(|(_, (busy, _))| !busy.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match idle.and_then(|id| self.conns.remove(&id)) {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

fn lock(m: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serve on a thread of its own, with a runtime of its own.
pub fn spawn(
    listener: std::net::TcpListener,
    metrics: Metrics,
    access: Access,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("s3lun-http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "no runtime for the HTTP listener");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, metrics, access).await,
                    Err(e) => error!(error = %e, "HTTP listener"),
                }
            });
        })?;
    Ok(())
}

/// Accept and answer, within [`MAX_CONNECTIONS`] (accept errors backed off).
pub async fn serve(listener: TcpListener, metrics: Metrics, access: Access) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (sock, peer) = server::accept(&listener).await;
        let (id, busy, close) = {
            let mut o = lock(&open);
            if !o.make_room() {
                debug!(%peer, "HTTP connection closed: every connection is answering");
                continue;
            }
            let id = o.next;
            o.next += 1;
            let (busy, close) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
            o.conns.insert(id, (Arc::clone(&busy), Arc::clone(&close)));
            (id, busy, close)
        };
        let (m, open) = (metrics.clone(), Arc::clone(&open));
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                busy.store(true, Ordering::Relaxed);
                answer(req, m.clone(), peer, access)
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), svc);
            tokio::select! {
                r = tokio::time::timeout(IO_TIMEOUT, conn) => match r {
                    Ok(Err(e)) => debug!(%peer, error = %e, "HTTP connection"),
                    Err(_) => debug!(%peer, "HTTP connection timed out"),
                    Ok(Ok(())) => {}
                },
                _ = close.notified() => debug!(%peer, "idle HTTP connection closed for a new one"),
            }
            lock(&open).conns.remove(&id);
        });
    }
}

fn text(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answer one request.
async fn answer(
    req: Request<Incoming>,
    metrics: Metrics,
    peer: SocketAddr,
    access: Access,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain";
    if req.method() != Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n"));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(hyper::header::ACCEPT);
            let om = format::wants_openmetrics(accept.and_then(|a| a.to_str().ok()));
            // Encoding every series takes a while with many LUNs: on a blocking
            // thread, so health requests keep being answered meanwhile.
            match tokio::task::spawn_blocking(move || metrics.render()).await {
                Ok(body) if om => text(StatusCode::OK, format::OPENMETRICS, body),
                Ok(body) => text(StatusCode::OK, format::CLASSIC, format::classic(&body)),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n")),
            }
        }
        // Alive: the process answers.
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/readyz" => match metrics.not_ready() {
            None => text(StatusCode::OK, PLAIN, "ready\n"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {why}\n"),
            ),
        },
        "/status" if !access.status_for(peer.ip()) => text(
            StatusCode::FORBIDDEN,
            PLAIN,
            "/status names sessions: answered on loopback only (public_status = true to change)\n",
        ),
        "/status" => match serde_json::to_string_pretty(&super::status::Status::of(&metrics)) {
            Ok(json) => text(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_for_loopback_peers_unless_made_public() {
        let private = Access::default();
        let public = Access {
            public_status: true,
        };
        for (peer, loopback) in [
            ("127.0.0.1", true),
            ("127.3.2.1", true),
            ("::1", true),
            ("10.252.1.9", false),
            ("192.168.0.7", false),
            ("fe80::1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            let ip: std::net::IpAddr = peer.parse().unwrap();
            assert_eq!(private.status_for(ip), loopback, "{peer}");
            assert!(public.status_for(ip), "{peer}");
        }
    }

    #[test]
    fn a_full_house_closes_its_oldest_idle_connection_only() {
        let mut o = Open::default();
        let mut conns = Vec::new();
        for id in 0..MAX_CONNECTIONS as u64 {
            let (busy, close) = (Arc::new(AtomicBool::new(id < 3)), Arc::new(Notify::new()));
            o.conns.insert(id, (Arc::clone(&busy), Arc::clone(&close)));
            conns.push(close);
        }
        assert!(o.make_room());
        // 0..3 are answering: the oldest idle one is 3.
        assert!(!o.conns.contains_key(&3));
        assert!(futures::FutureExt::now_or_never(conns[3].notified()).is_some());
        assert!(futures::FutureExt::now_or_never(conns[0].notified()).is_none());
        for (busy, _) in o.conns.values() {
            busy.store(true, Ordering::Relaxed);
        }
        o.conns.insert(
            999,
            (Arc::new(AtomicBool::new(true)), Arc::new(Notify::new())),
        );
        assert!(!o.make_room(), "all answering: the new one waits its turn");
    }
}
