//! The supervisor: the control plane's state machine, sans-IO as the protocol core
//! is. It decides when the catalog is scanned and the LUN table rebuilt, what a
//! signal or an admin command does, and when the process exits; it waits on
//! nothing. Events go in with the time, actions come out; the tokio layer
//! ([`super::run`]) carries the actions out and feeds their results back.
//!
//! Why a machine: an S3, an IMS or a disk that hangs must never hold up a signal,
//! an admin answer or the exit. Here a scan or a drain is something that was
//! started and will be answered (or cancelled at its deadline), never a call that
//! is waited on.

use std::time::{Duration, Instant};

/// Where an answer goes (an admin connection): the tokio layer's handle.
pub type ReplyTo = u64;

/// What the supervisor is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP, or `reload` on the admin socket (answered when the rescan is done).
    Reload { reply: Option<ReplyTo> },
    /// SIGTERM, or `drain` on the admin socket (answered once drained).
    Stop { reply: Option<ReplyTo> },
    /// SIGINT: stop without draining.
    Interrupt,
    /// A scan (catalog, shared map, static LUNs, table build) ended.
    ScanDone { scan: u64, outcome: Outcome },
    /// The drain task saw every session go (or gave up at its own timeout).
    Drained,
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A table was built (changed or not) with this many LUNs; `degraded`: some
    /// source or static LUN could not be read (retried sooner than `refresh`).
    Built { luns: usize, degraded: bool },
    /// The reloaded configuration is bad: the running one stays.
    BadConfig(String),
    /// Nothing could be built: the current table stays.
    Failed(String),
    /// Serving on would be unsafe (the shared map's server ignores conditional
    /// writes): stop.
    Fatal(String),
}

/// What the supervisor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start scan `scan`; `reload`: re-read the configuration first.
    StartScan { scan: u64, reload: bool },
    /// Abandon scan `scan` (its result, if it comes, is ignored).
    CancelScan { scan: u64 },
    /// Begin draining sessions (ALUA, redirects, logout requests).
    StartDrain,
    /// Answer an admin command.
    Reply { to: ReplyTo, text: String },
    /// A line for systemd's notify socket.
    Notify(String),
    /// Stop serving and exit: whatever is still running is abandoned by `by`.
    Exit { code: i32, by: Instant },
}

/// Timings of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Between scans; `None`: only at start and on reload.
    pub refresh: Option<Duration>,
    /// After a scan that failed or could not read everything: the next one comes
    /// this soon (or at `refresh`, when sooner), so S3 coming back is noticed.
    pub retry: Duration,
    /// A scan still running after this long is cancelled (every S3 call in it has
    /// its own deadline; this bounds the whole).
    pub scan_limit: Duration,
    /// How long a drain may take.
    pub drain: Duration,
    /// What the exit itself may take after the drain (stop the listeners, flush the
    /// cache): the process is gone by drain + this.
    pub exit_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Draining since SIGTERM (or an admin drain); exit when drained or at `until`.
    Draining {
        until: Instant,
    },
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Running {
    id: u64,
    started: Instant,
    reload: bool,
}

/// The control plane's state. See the module documentation.
#[derive(Debug)]
pub struct Supervisor {
    timing: Timing,
    phase: Phase,
    scan: Option<Running>,
    next_id: u64,
    next_scan: Option<Instant>,
    /// Admin `reload`s waiting for the rescan that carries their configuration.
    reload_replies: Vec<ReplyTo>,
    /// Admin `drain`s waiting for the drain to end.
    drain_replies: Vec<ReplyTo>,
    /// Outcome of the last scan, for `state`.
    last: Option<Outcome>,
}

impl Supervisor {
    /// A supervisor whose first scan starts at `now`.
    pub fn new(timing: Timing, now: Instant) -> Supervisor {
        Supervisor {
            timing,
            phase: Phase::Serving,
            scan: None,
            next_id: 1,
            next_scan: Some(now),
            reload_replies: Vec::new(),
            drain_replies: Vec::new(),
            last: None,
        }
    }

    /// Whether a scan is running.
    pub fn scanning(&self) -> bool {
        self.scan.is_some()
    }

    pub fn draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    pub fn exited(&self) -> bool {
        self.phase == Phase::Exited
    }

    /// The last scan's outcome.
    pub fn last_outcome(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// When [`Self::poll`] has something to do next.
    pub fn next_wake(&self) -> Option<Instant> {
        let scan_end = self
            .scan
            .as_ref()
            .map(|r| r.started + self.timing.scan_limit);
        let phase = match self.phase {
            Phase::Serving => self.next_scan.filter(|_| self.scan.is_none()),
            Phase::Draining { until } => Some(until),
            Phase::Exited => return None,
        };
        [scan_end, phase].into_iter().flatten().min()
    }

    /// Time passed: start a due scan, cancel an overdue one, end an overdue drain.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(r) = self
            .scan
            .as_ref()
            .filter(|r| now >= r.started + self.timing.scan_limit)
        {
            let why = format!(
                "scan {} did not end within {:?}: cancelled",
                r.id, self.timing.scan_limit
            );
            let id = r.id;
            out.push(Action::CancelScan { scan: id });
            self.finish_scan(now, Outcome::Failed(why), &mut out);
        }
        let due = self.scan.is_none() && self.next_scan.is_some_and(|t| now >= t);
        match self.phase {
            Phase::Serving if due => self.start_scan(now, false, &mut out),
            Phase::Draining { until } if now >= until => self.exit(now, 0, &mut out),
            _ => {}
        }
        out
    }

    /// Take one event at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Exited {
            // Nothing more happens; an admin command still gets an answer.
            if let Event::Reload { reply: Some(to) } | Event::Stop { reply: Some(to) } = event {
                out.push(reply(to, "error: exiting"));
            }
            return out;
        }
        match event {
            Event::Reload { reply: r } => {
                if self.draining() {
                    if let Some(to) = r {
                        out.push(reply(to, "error: draining, not reloading"));
                    }
                    return out;
                }
                out.push(Action::Notify("RELOADING=1".into()));
                self.reload_replies.extend(r);
                // A reload never waits for a scan that may hang: the running one is
                // abandoned and the new configuration scanned at once.
                if let Some(old) = self.scan.take() {
                    out.push(Action::CancelScan { scan: old.id });
                }
                self.start_scan(now, true, &mut out);
            }
            Event::Stop { reply: r } => match self.phase {
                Phase::Serving => {
                    self.drain_replies.extend(r);
                    if let Some(old) = self.scan.take() {
                        out.push(Action::CancelScan { scan: old.id });
                    }
                    self.answer_reloads("error: stopping before the reload was done", &mut out);
                    self.phase = Phase::Draining {
                        until: now + self.timing.drain,
                    };
                    out.push(Action::Notify("STOPPING=1\nSTATUS=draining".into()));
                    out.push(Action::StartDrain);
                }
                // A second stop: exit at once.
                _ => {
                    self.drain_replies.extend(r);
                    self.exit(now, 0, &mut out);
                }
            },
            Event::Interrupt => self.exit(now, 0, &mut out),
            Event::Drained => {
                if self.draining() {
                    self.exit(now, 0, &mut out);
                }
            }
            Event::ScanDone { scan, outcome } => {
                if self.scan.as_ref().is_some_and(|r| r.id == scan) {
                    self.finish_scan(now, outcome, &mut out);
                }
            }
        }
        out
    }

    fn start_scan(&mut self, now: Instant, reload: bool, out: &mut Vec<Action>) {
        let id = self.next_id;
        self.next_id += 1;
        self.scan = Some(Running {
            id,
            started: now,
            reload,
        });
        out.push(Action::StartScan { scan: id, reload });
    }

    fn finish_scan(&mut self, now: Instant, outcome: Outcome, out: &mut Vec<Action>) {
        let Some(run) = self.scan.take() else { return };
        let whole = matches!(
            outcome,
            Outcome::Built {
                degraded: false,
                ..
            } | Outcome::BadConfig(_)
        );
        let retry = self
            .timing
            .refresh
            .map_or(self.timing.retry, |r| r.min(self.timing.retry));
        self.next_scan = match whole {
            true => self.timing.refresh.map(|r| now + r),
            false => Some(now + retry),
        };
        if run.reload {
            let text = match &outcome {
                Outcome::Built { luns, .. } => format!("ok: reloaded, {luns} LUNs"),
                Outcome::BadConfig(e) => format!("error: {e}"),
                Outcome::Failed(e) | Outcome::Fatal(e) => format!("error: {e}"),
            };
            out.push(Action::Notify("READY=1".into()));
            self.answer_reloads(&text, out);
        }
        let fatal = matches!(outcome, Outcome::Fatal(_));
        self.last = Some(outcome);
        if fatal {
            self.exit(now, 1, out);
        }
    }

    fn answer_reloads(&mut self, text: &str, out: &mut Vec<Action>) {
        for to in self.reload_replies.drain(..) {
            out.push(reply(to, text));
        }
    }

    fn exit(&mut self, now: Instant, code: i32, out: &mut Vec<Action>) {
        if let Some(old) = self.scan.take() {
            out.push(Action::CancelScan { scan: old.id });
        }
        self.answer_reloads("error: exiting", out);
        let text = match self.phase {
            Phase::Draining { .. } => "ok: drained",
            _ => "error: exiting",
        };
        for to in self.drain_replies.drain(..) {
            out.push(reply(to, text));
        }
        self.phase = Phase::Exited;
        out.push(Action::Notify("STOPPING=1".into()));
        out.push(Action::Exit {
            code,
            by: now + self.timing.exit_grace,
        });
    }
}

fn reply(to: ReplyTo, text: &str) -> Action {
    Action::Reply {
        to,
        text: text.to_string(),
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
