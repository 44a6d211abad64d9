//! S3 as a worker sees it in production, in front of a local S3 server: every request
//! waits a first-byte latency before its answer starts, and all answers together share
//! one bandwidth. A TCP proxy that knows HTTP/1.1's turn-taking (a client speaks, then
//! the server answers) is enough: the first client bytes after an answer start a new
//! request. It counts requests and bytes, written as JSON to a stats file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

pub struct Shape {
    pub latency: Duration,
    /// Bytes per second, all answers together (0: unlimited).
    pub bandwidth: f64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    connections: AtomicU64,
}

/// When the shared link is free again.
/// How far behind the clock the link may be and still send at once (see reserve).
const CREDIT: Duration = Duration::from_millis(5);

struct Link {
    free_at: Mutex<Instant>,
}

impl Link {
    /// When `n` bytes handed over now have crossed the link.
    fn reserve(&self, n: usize, bandwidth: f64) -> Instant {
        let now = Instant::now();
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        // A sleep wakes up to a timer tick late: the link keeps that much credit, so
        // one stream is not held below the rate by its own oversleeping (without it,
        // one stream got 30 of 100 MB/s).
        let start = (*free).max(now.checked_sub(CREDIT).unwrap_or(now));
        *free = start + Duration::from_secs_f64(n as f64 / bandwidth);
        *free
    }
}

pub async fn serve(
    listen: &str,
    upstream: &str,
    shape: Shape,
    stats: Option<PathBuf>,
) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let counters = Arc::new(Counters::default());
    let link = Arc::new(Link {
        free_at: Mutex::new(Instant::now()),
    });
    let shape = Arc::new(shape);
    if let Some(path) = stats {
        let c = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let s = serde_json::json!({
                    "requests": c.requests.load(Ordering::Relaxed),
                    "bytes": c.bytes.load(Ordering::Relaxed),
                    "connections": c.connections.load(Ordering::Relaxed),
                })
                .to_string();
                if s != last {
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, &s)
                        .and_then(|_| std::fs::rename(&tmp, &path))
                        .is_ok()
                    {
                        last = s;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    loop {
        let (client, _) = l.accept().await?;
        let upstream = upstream.to_string();
        let (c, k, s) = (Arc::clone(&counters), Arc::clone(&link), Arc::clone(&shape));
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&upstream).await {
                c.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                proxy(client, server, c, k, s).await;
            }
        });
    }
}

async fn proxy(
    client: TcpStream,
    server: TcpStream,
    c: Arc<Counters>,
    link: Arc<Link>,
    shape: Arc<Shape>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set when a request starts, taken by the first byte of its answer.
    let asked: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let answering = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let up = {
        let (asked, answering, c) = (Arc::clone(&asked), Arc::clone(&answering), Arc::clone(&c));
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if answering.swap(false, Ordering::Relaxed) {
                    c.requests.fetch_add(1, Ordering::Relaxed);
                    *asked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = sw.shutdown().await;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            answering.store(true, Ordering::Relaxed);
            let t0 = asked.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t0) = t0 {
                tokio::time::sleep_until(t0 + shape.latency).await;
            }
            if shape.bandwidth > 0.0 {
                tokio::time::sleep_until(link.reserve(n, shape.bandwidth)).await;
            }
            c.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
