//! One booting node: discovery, login, the boot trace replayed with its causality,
//! every byte it reads checked against the image, then (optionally) staying logged in
//! answering the target's pings until told to log out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use s3lun::pdu::*;
use s3lun::scsi::logical_unit::encode_lun;
use s3lun::scsi::sense::{self, Sense};
use tokio::time::{sleep_until, Instant};

use crate::link::{Identity, Link};
use crate::trace::{Step, Trace};

/// What every node of a run shares.
pub struct Plan {
    pub addr: String,
    pub target: String,
    /// The LUN's number, as REPORT LUNS and the target's URL give it.
    pub lun: u64,
    pub trace: Trace,
    pub steps: Vec<Step>,
    /// The image the LUN serves: what every read must return.
    pub image: Arc<dyn AsRef<[u8]> + Send + Sync>,
    pub discovery: bool,
    pub connect_timeout: Duration,
}

impl Plan {
    fn image(&self) -> &[u8] {
        (*self.image).as_ref()
    }

    /// The trace's LBA moved into the image when the image is smaller than the one
    /// the trace was recorded on (the shape of the boot is kept, not its addresses).
    fn lba(&self, i: usize) -> u64 {
        let r = self.trace.reads[i];
        let blocks = self.image().len() as u64 / 512;
        if r.lba + r.blocks as u64 <= blocks {
            r.lba
        } else {
            r.lba % blocks.saturating_sub(r.blocks as u64).max(1)
        }
    }
}

/// How one node's boot went.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// From the node's start to its session's login answer.
    pub login: Duration,
    /// From the node's start to its trace's last read.
    pub boot: Duration,
    pub reads: u64,
    pub bytes: u64,
    /// Reads whose data differed from the image.
    pub wrong_reads: u64,
    pub error: Option<String>,
}

/// Boot one node and report how it went on `booted`; then, with `hold`, stay logged
/// in until it turns true. Returns what went wrong after the boot, if anything.
pub async fn boot(
    plan: Arc<Plan>,
    who: Identity,
    booted: tokio::sync::mpsc::UnboundedSender<Outcome>,
    hold: Option<tokio::sync::watch::Receiver<bool>>,
) -> Option<String> {
    let start = Instant::now();
    let mut out = Outcome::default();
    let link = match run(&plan, &who, start, &mut out).await {
        Ok(link) => Some(link),
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            None
        }
    };
    let _ = booted.send(out);
    let mut link = link?;
    if let Some(mut release) = hold {
        link.shrink();
        if let Err(e) = stay(&mut link, &mut release).await {
            return Some(format!("while staying logged in: {e:#}"));
        }
    }
    link.logout().await.err().map(|e| format!("logout: {e:#}"))
}

async fn run(
    plan: &Plan,
    who: &Identity,
    start: Instant,
    out: &mut Outcome,
) -> anyhow::Result<Link> {
    if plan.discovery {
        let mut d = Link::connect(&plan.addr, plan.connect_timeout).await?;
        d.login(who, None).await.context("discovery login")?;
        let names = d.send_targets().await?;
        if !names.iter().any(|n| n == &plan.target) {
            bail!("SendTargets did not name {}: {names:?}", plan.target);
        }
        d.logout().await.context("discovery logout")?;
    }
    let mut link = Link::connect(&plan.addr, plan.connect_timeout).await?;
    link.login(who, Some(&plan.target)).await.context("login")?;
    out.login = start.elapsed();
    replay(plan, &mut link, out).await?;
    out.boot = start.elapsed();
    Ok(link)
}

/// A command in flight.
struct Flight {
    index: usize,
    itt: u32,
    offset: u64,
    len: usize,
    got: usize,
    /// The first byte that differed from the image, if one did.
    wrong: Option<String>,
}

async fn replay(plan: &Plan, link: &mut Link, out: &mut Outcome) -> anyhow::Result<()> {
    let n = plan.trace.reads.len();
    let t0 = Instant::now();
    let mut issued: Vec<Option<Instant>> = vec![None; n];
    let mut done: Vec<Option<Instant>> = vec![None; n];
    let mut flights: Vec<Flight> = Vec::new();
    let mut retry: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut completed = 0;
    let image = plan.image();
    while completed < n {
        // When the next command may go: its cause completed, its think time passed.
        let due = retry.last().map(|_| Instant::now()).or_else(|| {
            (next < n).then_some(())?;
            let s = plan.steps[next];
            let after = match s.after {
                Some(j) => done[j]? + Duration::from_micros(s.think_us),
                None => t0 + Duration::from_micros(s.think_us),
            };
            let burst = match next {
                0 => t0,
                _ => issued[next - 1]? + Duration::from_micros(s.burst_us),
            };
            Some(after.max(burst))
        });
        let can_send = due.is_some() && link.window_open();
        tokio::select! {
            p = link.recv() => {
                let p = p?;
                if let Some(i) = received(p, link, &mut flights, image, out, &mut retry).await? {
                    done[i] = Some(Instant::now());
                    completed += 1;
                }
            }
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if can_send => {
                let i = match retry.pop() {
                    Some(i) => i,
                    None => { next += 1; next - 1 }
                };
                let r = plan.trace.reads[i];
                let lba = plan.lba(i);
                let itt = link.itt();
                // READ(16): LBAs of any image size.
                let mut cdb = [0u8; 16];
                cdb[0] = 0x88;
                cdb[2..10].copy_from_slice(&lba.to_be_bytes());
                cdb[10..14].copy_from_slice(&r.blocks.to_be_bytes());
                let mut cmd = ScsiCommand::read(itt, link.cmd_sn, cdb, r.blocks * 512);
                cmd.lun = encode_lun(plan.lun);
                cmd.exp_stat_sn = link.exp_stat_sn;
                link.send(&Header::ScsiCommand(cmd), &[]).await?;
                link.cmd_sn = link.cmd_sn.wrapping_add(1);
                issued[i].get_or_insert_with(Instant::now);
                flights.push(Flight { index: i, itt, offset: lba * 512, len: r.blocks as usize * 512, got: 0, wrong: None });
            }
        }
    }
    Ok(())
}

/// Handle one PDU during replay; the index of a read it completed, if any.
async fn received(
    p: Pdu,
    link: &mut Link,
    flights: &mut Vec<Flight>,
    image: &[u8],
    out: &mut Outcome,
    retry: &mut Vec<usize>,
) -> anyhow::Result<Option<usize>> {
    let find = |flights: &Vec<Flight>, itt: u32| flights.iter().position(|f| f.itt == itt);
    match p.header {
        Header::DataIn(d) => {
            link.saw(d.status.map(|_| d.stat_sn), d.max_cmd_sn);
            let k = find(flights, d.itt)
                .with_context(|| format!("Data-In for unknown ITT {:#x}", d.itt))?;
            let f = &mut flights[k];
            let at = d.buffer_offset as usize;
            if at + p.data.len() > f.len {
                bail!(
                    "Data-In beyond the command's length (offset {at}, {} bytes)",
                    p.data.len()
                );
            }
            let want = &image[(f.offset as usize + at)..(f.offset as usize + at + p.data.len())];
            // Judged only once the status is known: data followed by CHECK CONDITION
            // (tgt sends a buffer before a unit attention) is not what was read.
            if f.wrong.is_none() && want != &p.data[..] {
                let first = want
                    .iter()
                    .zip(p.data.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                f.wrong = Some(format!(
                    "wrong byte at image offset {}: read {:#04x}, the image has {:#04x}",
                    f.offset as usize + at + first,
                    p.data[first],
                    want[first]
                ));
            }
            f.got += p.data.len();
            match d.status {
                Some(ScsiStatus::Good) => Ok(Some(finish(flights, k, out)?)),
                Some(s) => bail!("READ ended with status {s:?}"),
                None => Ok(None),
            }
        }
        Header::ScsiResponse(r) => {
            link.saw(Some(r.stat_sn), r.max_cmd_sn);
            let k = find(flights, r.itt)
                .with_context(|| format!("response for unknown ITT {:#x}", r.itt))?;
            match r.status {
                ScsiStatus::Good => Ok(Some(finish(flights, k, out)?)),
                ScsiStatus::CheckCondition => {
                    let key = Sense::from_response_segment(&p.data).map(|s| s.key);
                    let f = flights.swap_remove(k);
                    if key == Some(sense::key::UNIT_ATTENTION) {
                        // Unit attention (the power-on one a new session meets): again.
                        retry.push(f.index);
                        return Ok(None);
                    }
                    bail!("READ failed: CHECK CONDITION, sense key {key:?}")
                }
                s => bail!("READ ended with status {s:?}"),
            }
        }
        Header::NopIn(n) => {
            link.answer_nop(&n).await?;
            Ok(None)
        }
        Header::AsyncMessage(_) => Ok(None),
        Header::Reject(r) => bail!("the target rejected a PDU: {r:?}"),
        h => bail!("unexpected {:?} during reads", h.opcode()),
    }
}

fn finish(flights: &mut Vec<Flight>, k: usize, out: &mut Outcome) -> anyhow::Result<usize> {
    let f = flights.swap_remove(k);
    if let Some(w) = f.wrong {
        out.wrong_reads += 1;
        bail!("{w}");
    }
    if f.got != f.len {
        bail!("READ of {} bytes returned {}", f.len, f.got);
    }
    out.reads += 1;
    out.bytes += f.len as u64;
    Ok(f.index)
}

/// Stay logged in, answering pings, until `release` turns true.
async fn stay(
    link: &mut Link,
    release: &mut tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        if *release.borrow() {
            return Ok(());
        }
        tokio::select! {
            p = link.recv() => match p?.header {
                Header::NopIn(n) => link.answer_nop(&n).await?,
                Header::AsyncMessage(_) => {}
                h => bail!("unexpected {:?} while idle", h.opcode()),
            },
            r = release.changed() => if r.is_err() { return Ok(()) },
        }
    }
}
