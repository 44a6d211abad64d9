//! A storm: N nodes booting at once (or over a ramp) from one process, each replaying
//! the trace on its own session; then, while they stay logged in, fresh logins timed
//! as a newcomer would see them; then everyone logs out. The target's processes are
//! watched meanwhile (CPU seconds, peak RSS and open descriptors from /proc).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::link::{Identity, Link};
use crate::node::{self, Outcome, Plan};
use crate::procwatch::Watch;

pub struct Storm {
    pub nodes: u32,
    /// Spread the nodes' starts over this long (0: all at once).
    pub ramp: Duration,
    /// Keep every node logged in after its boot until all have booted and the probes
    /// are done (the 10,000-session case); otherwise each logs out when done.
    pub hold: bool,
    /// How much longer held sessions stay once all have booted and the probes ran.
    pub hold_for: Duration,
    /// Fresh logins timed once every node has booted.
    pub probes: u32,
    pub prefix: String,
    pub watch: Vec<u32>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn spread(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    json!({ "p50": pct(&v, 0.5), "p99": pct(&v, 0.99), "max": v.last().copied().unwrap_or(0.0) })
}

/// Run the storm; the summary as one JSON object.
pub async fn storm(plan: Arc<Plan>, s: &Storm) -> serde_json::Value {
    let watch = Watch::start(&s.watch);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let (release, hold) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(s.nodes as usize);
    for n in 0..s.nodes {
        let at = start + s.ramp.mul_f64(n as f64 / s.nodes.max(1) as f64);
        let plan = Arc::clone(&plan);
        let who = Identity::node(&s.prefix, n);
        let tx = tx.clone();
        let hold = s.hold.then(|| hold.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            node::boot(plan, who, tx, hold).await
        }));
    }
    drop(tx);
    let mut outcomes = Vec::with_capacity(s.nodes as usize);
    while outcomes.len() < s.nodes as usize {
        match rx.recv().await {
            Some(o) => outcomes.push(o),
            None => break,
        }
    }
    let booted_at = start.elapsed();
    let mut probe_ms = Vec::new();
    let mut probe_errors = Vec::new();
    for k in 0..s.probes {
        let who = Identity::node(&format!("{}-probe", s.prefix), k);
        let t = Instant::now();
        let r = async {
            let mut l = Link::connect(&plan.addr, plan.connect_timeout).await?;
            l.login(&who, Some(&plan.target)).await?;
            let took = t.elapsed();
            l.logout().await?;
            anyhow::Ok(took)
        };
        match r.await {
            Ok(d) => probe_ms.push(ms(d)),
            Err(e) => probe_errors.push(format!("{e:#}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sessions_held = if s.hold {
        outcomes.iter().filter(|o| o.error.is_none()).count()
    } else {
        0
    };
    if s.hold {
        tokio::time::sleep(s.hold_for).await;
    }
    let _ = release.send(true);
    let mut late = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Some(e)) => late.push(e),
            Ok(None) => {}
            Err(e) => late.push(format!("node task: {e}")),
        }
    }
    let proc = watch.stop().await;
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let last_login = ok.iter().map(|o| o.login).max().unwrap_or_default();
    let logins_per_sec = if last_login.is_zero() {
        0.0
    } else {
        (ok.len() as f64 / last_login.as_secs_f64()).round()
    };
    json!({
        "nodes": s.nodes,
        "booted": ok.len(),
        "errors": errors.len() + late.len() + probe_errors.len(),
        "first_errors": errors.iter().take(3).copied().chain(late.iter().take(3)).chain(probe_errors.iter().take(3)).collect::<Vec<_>>(),
        "wrong_reads": outcomes.iter().map(|o| o.wrong_reads).sum::<u64>(),
        "boot_ms": spread(ok.iter().map(|o| ms(o.boot)).collect()),
        "login_ms": spread(ok.iter().map(|o| ms(o.login)).collect()),
        "logins_per_sec": logins_per_sec,
        "sessions_held": sessions_held,
        "probe_login_ms": spread(probe_ms),
        "reads": ok.iter().map(|o| o.reads).sum::<u64>(),
        "bytes": ok.iter().map(|o| o.bytes).sum::<u64>(),
        "all_booted_s": (booted_at.as_secs_f64() * 100.0).round() / 100.0,
        "target": proc,
    })
}
