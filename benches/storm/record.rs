//! Recording a boot trace: a TCP proxy between a real initiator (a kernel in QEMU)
//! and the target that forwards every byte unchanged and notes each READ command's
//! LBA, length, and when it was issued and completed. Written as a trace file when a
//! connection that read something closes (the one with the most reads wins).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::BytesMut;
use s3lun::pdu::framing::decode;
use s3lun::pdu::*;
use s3lun::scsi::cdb::Command;
use s3lun::scsi::commands::decode as decode_cdb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::trace::{Read, Trace};

/// PDUs as they cross the proxy: no digests (what the boot tests' initiators use),
/// data segments as large as any initiator negotiates.
const CFG: FrameConfig = FrameConfig {
    header_digest: false,
    data_digest: false,
    max_data_segment: 16 << 20,
};

#[derive(Default)]
struct Book {
    start: Option<Instant>,
    open: HashMap<u32, (u64, u64, u32)>,
    done: Vec<Read>,
}

impl Book {
    fn us(&mut self, now: Instant) -> u64 {
        now.duration_since(*self.start.get_or_insert(now))
            .as_micros() as u64
    }

    /// Note a READ (of any CDB size), decoded as the target decodes it.
    fn command(&mut self, c: &ScsiCommand) {
        let Ok(Command::Read { lba, blocks }) = decode_cdb(&c.cdb) else {
            return;
        };
        let Ok(blocks) = u32::try_from(blocks) else {
            return;
        };
        if blocks == 0 {
            return;
        }
        let t = self.us(Instant::now());
        self.open.insert(c.itt, (t, lba, blocks));
    }

    fn completed(&mut self, itt: u32) {
        if let Some((issue_us, lba, blocks)) = self.open.remove(&itt) {
            let done_us = self.us(Instant::now());
            self.done.push(Read {
                issue_us,
                done_us,
                lba,
                blocks,
            });
        }
    }
}

pub async fn serve(
    listen: &str,
    upstream: &str,
    out: PathBuf,
    image_bytes: u64,
) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let best = Arc::new(Mutex::new(0usize));
    loop {
        let (client, _) = l.accept().await?;
        let server = match TcpStream::connect(upstream).await {
            Ok(s) => s,
            Err(e) => {
                // The initiator sees its connection close, as with a target down.
                eprintln!("record: connect {upstream}: {e}");
                continue;
            }
        };
        let (out, best) = (out.clone(), Arc::clone(&best));
        tokio::spawn(async move {
            let book = Arc::new(Mutex::new(Book::default()));
            relay(client, server, Arc::clone(&book)).await;
            let book = std::mem::take(&mut *book.lock().unwrap_or_else(|p| p.into_inner()));
            let mut reads = book.done;
            reads.sort_by_key(|r| r.issue_us);
            let mut best = best.lock().unwrap_or_else(|p| p.into_inner());
            if reads.len() > *best {
                *best = reads.len();
                let t = Trace { image_bytes, reads };
                match std::fs::write(&out, t.encode()) {
                    Ok(()) => eprintln!("recorded {} reads into {}", t.reads.len(), out.display()),
                    Err(e) => eprintln!("writing {}: {e}", out.display()),
                }
            }
        });
    }
}

async fn relay(client: TcpStream, server: TcpStream, book: Arc<Mutex<Book>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pump(cr, sw, Arc::clone(&book), true),
        pump(sr, cw, book, false)
    );
}

/// Copy one direction, watching its PDUs; `from_initiator` tells whose they are.
async fn pump<R, W>(mut r: R, mut w: W, book: Arc<Mutex<Book>>, from_initiator: bool)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 256 * 1024];
    let mut seen = BytesMut::new();
    let mut parsing = true;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if !parsing {
            continue;
        }
        seen.extend_from_slice(&buf[..n]);
        loop {
            match decode(&mut seen, &CFG) {
                Ok(Some(p)) => {
                    let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
                    match (&p.header, from_initiator) {
                        (Header::ScsiCommand(c), true) if c.read => b.command(c),
                        (Header::DataIn(d), false) if d.status.is_some() => b.completed(d.itt),
                        (Header::ScsiResponse(s), false) => b.completed(s.itt),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Digests or a framing we do not follow: keep relaying, stop noting.
                    eprintln!("record: stopped parsing this connection: {e}");
                    parsing = false;
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}
