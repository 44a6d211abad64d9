//! The tokio layer of the control plane: signals, the admin socket and task
//! results become [`Event`]s for the [`Supervisor`]; its [`Action`]s become tasks
//! (scans, the drain), answers, notify lines and, at the end, the exit. Nothing
//! here waits on S3: a scan is a task that is aborted when the supervisor cancels
//! it, and the exit gives the listeners, the cache and the runtime a fixed time.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::drain;
use super::rescan::{rescan, Planner};
use super::start;
use super::supervisor::{Action, Event, Outcome, ReplyTo, Supervisor, Timing};
use crate::admin;
use crate::catalog::scan::ScanMemory;
use crate::cli::{effective_config, ServeArgs};
use crate::config::Config;
use crate::notify::notify;
use crate::server;

/// What the exit leaves to the runtime's own shutdown (see `main`).
pub const RUNTIME_GRACE: Duration = Duration::from_millis(200);

/// The supervisor's timings for `cfg`.
fn timing(cfg: &Config) -> Timing {
    let s3_deadline = cfg
        .s3
        .as_ref()
        .map_or(crate::config::S3Config::default().deadline_secs, |s| {
            s.deadline_secs
        });
    // Anything to rescan: catalog sources, the shared map, or S3 static LUNs
    // (one that could not be read at start is retried).
    let periodic = !cfg.catalog.is_empty()
        || cfg.lunmap.s3.is_some()
        || cfg.luns.iter().any(|l| l.s3.is_some());
    Timing {
        refresh: match cfg.catalog.refresh_secs {
            0 => None,
            n => Some(Duration::from_secs(n)).filter(|_| periodic),
        },
        retry: Duration::from_secs(30),
        // A scan is a few rounds of S3 calls, each bounded by the S3 deadline.
        scan_limit: Duration::from_secs((4 * s3_deadline).max(10)),
        drain: Duration::from_secs(cfg.drain_timeout_secs),
        exit_grace: Duration::from_secs(1),
    }
}

/// Serve until the supervisor says exit.
pub async fn serve(args: ServeArgs, cfg: Config) -> anyhow::Result<()> {
    let up = start::up(&cfg).await?;
    // Signals are ours before anyone is told we are up: a SIGTERM right after
    // READY=1 (systemd, a benchmark) would otherwise kill the process unannounced.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let target = Arc::clone(&up.target);
    let server = tokio::spawn(server::serve(Arc::clone(&target), up.listeners, stop_rx));
    target.stats.ready.store(true, Ordering::Relaxed);
    notify(&format!(
        "READY=1\nSTATUS=serving {} LUNs",
        up.luns.borrow().len()
    ));
    let planner = Arc::new(Mutex::new(Planner {
        builder: up.builder,
        memory: ScanMemory::default(),
    }));
    let mut admin_rx = up.admin;
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut sup = Supervisor::new(timing(&cfg), Instant::now());
    let mut cfg = cfg;
    let mut scan: Option<(u64, JoinHandle<()>)> = None;
    let mut replies: HashMap<ReplyTo, oneshot::Sender<String>> = HashMap::new();
    let mut next_reply: ReplyTo = 0;
    let (code, by) = 'run: loop {
        let wake = sup.next_wake();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            _ = sleep => None,
            _ = hup.recv() => Some(Event::Reload { reply: None }),
            _ = term.recv() => Some(Event::Stop { reply: None }),
            _ = int.recv() => Some(Event::Interrupt),
            Some(e) = events.recv() => Some(e),
            Some(req) = admin_rx.recv() => {
                let mut hold = |reply| {
                    next_reply += 1;
                    replies.insert(next_reply, reply);
                    Some(next_reply)
                };
                match req.command {
                    admin::Command::Drain => Some(Event::Stop { reply: hold(req.reply) }),
                    admin::Command::Reload => {
                        info!("reload asked for on the admin socket");
                        Some(Event::Reload { reply: hold(req.reply) })
                    }
                    command => {
                        let text = drain::answer(command, &target, &up.control, &up.backends, sup.scanning());
                        let _ = req.reply.send(text);
                        continue;
                    }
                }
            }
        };
        let now = Instant::now();
        let actions = match event {
            Some(e) => sup.handle(now, e),
            None => sup.poll(now),
        };
        for action in actions {
            match action {
                Action::StartScan { scan: id, reload } => {
                    if reload {
                        match effective_config(&args) {
                            Ok(c) => {
                                info!("configuration re-read");
                                up.control
                                    .send_modify(|c2| c2.redirect_to = c.redirect_addresses());
                                cfg = c;
                            }
                            Err(e) => {
                                let e = format!("{e:#}");
                                error!(
                                    error = e,
                                    "reload: bad configuration, keeping the current one"
                                );
                                let outcome = Outcome::BadConfig(e);
                                let _ = events_tx.send(Event::ScanDone { scan: id, outcome });
                                continue;
                            }
                        }
                    }
                    let job = rescan(
                        Arc::clone(&planner),
                        cfg.clone(),
                        up.luns.clone(),
                        Arc::clone(&up.catalog_stats),
                    );
                    let tx = events_tx.clone();
                    let handle = tokio::spawn(async move {
                        let outcome = job.await;
                        let _ = tx.send(Event::ScanDone { scan: id, outcome });
                    });
                    scan = Some((id, handle));
                }
                Action::CancelScan { scan: id } => {
                    if let Some((running, handle)) = scan.take() {
                        if running == id {
                            warn!(
                                scan = id,
                                "scan abandoned (hanging, superseded or stopping)"
                            );
                            up.catalog_stats
                                .scans_abandoned
                                .fetch_add(1, Ordering::Relaxed);
                            handle.abort();
                        } else {
                            scan = Some((running, handle));
                        }
                    }
                }
                Action::StartDrain => {
                    let (target, control, cfg, tx) = (
                        Arc::clone(&target),
                        up.control.clone(),
                        cfg.clone(),
                        events_tx.clone(),
                    );
                    tokio::spawn(async move {
                        drain::drain(&target, &control, &cfg).await;
                        let _ = tx.send(Event::Drained);
                    });
                }
                Action::Reply { to, text } => {
                    if let Some(r) = replies.remove(&to) {
                        let _ = r.send(text);
                    }
                }
                Action::Notify(line) => notify(&line),
                Action::Exit { code, by } => break 'run (code, by),
            }
        }
    };
    info!(code, "shutting down");
    target.stats.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    // What is left of the exit's time, less the runtime's own shutdown: the
    // listeners and connections first, then the cache's write-behind.
    let end = tokio::time::Instant::from_std(by) - RUNTIME_GRACE;
    let half = tokio::time::Instant::now() + (end - tokio::time::Instant::now()) / 2;
    if tokio::time::timeout_at(half, server).await.is_err() {
        warn!("connections still open at exit: abandoned");
    }
    // Chunks fetched but not yet on disk would be fetched again after a restart.
    let cache = Arc::clone(&up.backends.cache);
    let within = end.saturating_duration_since(tokio::time::Instant::now());
    let flush = tokio::task::spawn_blocking(move || cache.flush_within(within));
    let _ = tokio::time::timeout_at(end, flush).await;
    up.backends.cache.close();
    match code {
        0 => Ok(()),
        _ => {
            let why = match sup.last_outcome() {
                Some(Outcome::Fatal(e)) => e.clone(),
                _ => "stopped on an error".into(),
            };
            Err(anyhow::anyhow!(why))
        }
    }
}
