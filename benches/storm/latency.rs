//! `s3lun-storm latency`: one session's 4 KiB random reads, one at a time, each
//! timed and checked against the image, while (optionally) scrapers fetch an HTTP
//! URL at an interval: what a scrape costs a bystander's reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use s3lun::pdu::*;
use s3lun::scsi::logical_unit::encode_lun;
use s3lun::scsi::sense::{self, Sense};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::link::{Identity, Link};

pub struct Latency {
    pub addr: String,
    pub target: String,
    pub lun: u64,
    pub reads: u32,
    /// host:port and path fetched by each scraper, every `every`.
    pub scrape: Option<(String, String)>,
    pub scrapers: u32,
    pub every: Duration,
}

/// Fetch `path` from `addr` every `every` until `stop`; bytes fetched go to `bytes`.
async fn scraper(
    addr: String,
    path: String,
    every: Duration,
    bytes: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    while !*stop.borrow() {
        tick.tick().await;
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        let mut body = Vec::new();
        let _ = s.read_to_end(&mut body).await;
        bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    }
}

pub async fn run(l: Latency, image: &[u8]) -> anyhow::Result<serde_json::Value> {
    let mut link = Link::connect(&l.addr, Duration::from_secs(30)).await?;
    let who = Identity::node("iqn.2026-12.org.s3lun:latency", 1);
    link.login(&who, Some(&l.target)).await.context("login")?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let bytes = Arc::new(AtomicU64::new(0));
    if let Some((addr, path)) = &l.scrape {
        for _ in 0..l.scrapers {
            tokio::spawn(scraper(
                addr.clone(),
                path.clone(),
                l.every,
                Arc::clone(&bytes),
                stop.clone(),
            ));
        }
    }
    let blocks = image.len() as u64 / 512;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut times = Vec::with_capacity(l.reads as usize);
    let started = Instant::now();
    while times.len() < l.reads as usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lba = (seed % blocks.saturating_sub(8).max(1)) & !7;
        let itt = link.itt();
        let mut cdb = [0u8; 16];
        cdb[0] = 0x88;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&8u32.to_be_bytes());
        let mut cmd = ScsiCommand::read(itt, link.cmd_sn, cdb, 4096);
        cmd.lun = encode_lun(l.lun);
        cmd.exp_stat_sn = link.exp_stat_sn;
        let t = Instant::now();
        link.send(&Header::ScsiCommand(cmd), &[]).await?;
        link.cmd_sn = link.cmd_sn.wrapping_add(1);
        let mut got = Vec::with_capacity(4096);
        let good = loop {
            let p = link.recv().await?;
            match p.header {
                Header::DataIn(d) if d.itt == itt => {
                    link.saw(d.status.map(|_| d.stat_sn), d.max_cmd_sn);
                    got.extend_from_slice(&p.data);
                    if let Some(s) = d.status {
                        break s == ScsiStatus::Good;
                    }
                }
                Header::ScsiResponse(r) if r.itt == itt => {
                    link.saw(Some(r.stat_sn), r.max_cmd_sn);
                    let key = Sense::from_response_segment(&p.data).map(|s| s.key);
                    if r.status == ScsiStatus::CheckCondition
                        && key == Some(sense::key::UNIT_ATTENTION)
                    {
                        break false;
                    }
                    if r.status != ScsiStatus::Good {
                        bail!("READ failed: {:?}, sense key {key:?}", r.status);
                    }
                    break true;
                }
                Header::NopIn(n) => link.answer_nop(&n).await?,
                Header::AsyncMessage(_) => {}
                h => bail!("unexpected {:?}", h.opcode()),
            }
        };
        if !good {
            continue; // a unit attention: read again
        }
        let at = lba as usize * 512;
        if got[..] != image[at..at + 4096] {
            bail!("wrong bytes at LBA {lba}");
        }
        times.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = link.logout().await;
    times.sort();
    let us = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_micros() as u64;
    Ok(serde_json::json!({
        "reads": times.len(),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "secs": secs,
        "scrapers": if l.scrape.is_some() { l.scrapers } else { 0 },
        "scraped_bytes": bytes.load(Ordering::Relaxed),
    }))
}
