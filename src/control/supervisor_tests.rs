//! The supervisor's tests: deterministic cases, then a property over event orders
//! (scans that hang, fail or come back late; signals and admin commands at any
//! time) with the invariants the docs list (docs/control-plane.md).

use std::collections::{BTreeSet, HashMap};

use super::*;
use proptest::prelude::*;

fn timing() -> Timing {
    Timing {
        refresh: Some(Duration::from_secs(60)),
        retry: Duration::from_secs(10),
        scan_limit: Duration::from_secs(30),
        drain: Duration::from_secs(5),
        exit_grace: Duration::from_secs(1),
    }
}

fn started(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::StartScan { scan, .. } => Some(*scan),
        _ => None,
    })
}

fn exit_of(actions: &[Action]) -> Option<(i32, Instant)> {
    actions.iter().find_map(|a| match a {
        Action::Exit { code, by } => Some((*code, *by)),
        _ => None,
    })
}

#[test]
fn the_first_scan_starts_at_once_and_the_next_after_refresh() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(timing(), t0);
    let a = s.poll(t0);
    let id = started(&a).expect("first scan");
    assert!(
        s.poll(t0 + Duration::from_secs(1)).is_empty(),
        "one at a time"
    );
    let done = Event::ScanDone {
        scan: id,
        outcome: Outcome::Built {
            luns: 3,
            degraded: false,
        },
    };
    assert!(s.handle(t0 + Duration::from_secs(2), done).is_empty());
    assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(62)));
    assert!(started(&s.poll(t0 + Duration::from_secs(62))).is_some());
}

#[test]
fn a_hanging_scan_is_cancelled_at_its_limit_and_the_next_one_is_scheduled() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(timing(), t0);
    let id = started(&s.poll(t0)).unwrap();
    assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(30)));
    let a = s.poll(t0 + Duration::from_secs(30));
    assert!(a.contains(&Action::CancelScan { scan: id }));
    assert!(!s.scanning());
    assert!(matches!(s.last_outcome(), Some(Outcome::Failed(_))));
    // A failed scan is retried sooner than the refresh.
    // Its late answer is ignored.
    let late = Event::ScanDone {
        scan: id,
        outcome: Outcome::Built {
            luns: 1,
            degraded: false,
        },
    };
    assert!(s.handle(t0 + Duration::from_secs(31), late).is_empty());
    assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(40)));
}

#[test]
fn a_reload_does_not_wait_for_a_hanging_scan() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(timing(), t0);
    let first = started(&s.poll(t0)).unwrap();
    let a = s.handle(t0, Event::Reload { reply: Some(7) });
    assert_eq!(a[0], Action::Notify("RELOADING=1".into()));
    assert!(a.contains(&Action::CancelScan { scan: first }));
    let second = started(&a).unwrap();
    assert_ne!(first, second);
    let done = Event::ScanDone {
        scan: second,
        outcome: Outcome::Built {
            luns: 2,
            degraded: false,
        },
    };
    let a = s.handle(t0, done);
    assert!(a.contains(&Action::Notify("READY=1".into())));
    assert!(a.contains(&Action::Reply {
        to: 7,
        text: "ok: reloaded, 2 LUNs".into()
    }));
}

#[test]
fn sigterm_drains_then_exits_and_a_second_one_exits_at_once() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(timing(), t0);
    let scan = started(&s.poll(t0)).unwrap();
    let a = s.handle(t0, Event::Stop { reply: None });
    assert!(a.contains(&Action::CancelScan { scan }));
    assert!(a.contains(&Action::StartDrain));
    assert!(exit_of(&a).is_none());
    assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(5)));
    let a = s.handle(t0 + Duration::from_secs(1), Event::Stop { reply: None });
    assert_eq!(
        exit_of(&a),
        Some((0, t0 + Duration::from_secs(2))),
        "second SIGTERM"
    );
    assert!(s.exited());
    assert_eq!(s.next_wake(), None);
}

#[test]
fn a_drain_that_never_ends_exits_at_its_deadline() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(timing(), t0);
    s.poll(t0);
    s.handle(t0, Event::Stop { reply: Some(1) });
    assert!(exit_of(&s.poll(t0 + Duration::from_millis(4999))).is_none());
    let a = s.poll(t0 + Duration::from_secs(5));
    assert_eq!(exit_of(&a), Some((0, t0 + Duration::from_secs(6))));
    assert!(a.contains(&Action::Reply {
        to: 1,
        text: "ok: drained".into()
    }));
}

#[test]
fn a_fatal_scan_exits_non_zero_and_a_bad_config_keeps_serving() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(timing(), t0);
    s.poll(t0);
    let a = s.handle(t0, Event::Reload { reply: Some(3) });
    let id = started(&a).unwrap();
    let bad = Outcome::BadConfig("line 3: unknown key".into());
    let a = s.handle(
        t0,
        Event::ScanDone {
            scan: id,
            outcome: bad,
        },
    );
    assert!(a.contains(&Action::Reply {
        to: 3,
        text: "error: line 3: unknown key".into()
    }));
    assert!(exit_of(&a).is_none());
    let id = started(&s.poll(t0 + Duration::from_secs(60))).unwrap();
    let fatal = Outcome::Fatal("conditional writes ignored".into());
    let a = s.handle(
        t0,
        Event::ScanDone {
            scan: id,
            outcome: fatal,
        },
    );
    assert_eq!(exit_of(&a).map(|(c, _)| c), Some(1));
}

/// One step of a run: an event, or time passing (the harness polls at each wake).
#[derive(Debug, Clone)]
enum Step {
    Hup,
    AdminReload,
    Term,
    AdminDrain,
    Int,
    Drained,
    /// The running scan answers (or a stale id does, when `stale`).
    Finish {
        stale: bool,
        outcome: u8,
    },
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Hup),
        1 => Just(Step::AdminReload),
        1 => Just(Step::Term),
        1 => Just(Step::AdminDrain),
        1 => Just(Step::Int),
        1 => Just(Step::Drained),
        4 => (any::<bool>(), 0u8..4).prop_map(|(stale, outcome)| Step::Finish { stale, outcome }),
        4 => (0u64..40_000).prop_map(Step::Wait),
    ]
}

/// The harness: feeds steps, carries actions out as bookkeeping, checks invariants
/// after every step.
struct Run {
    s: Supervisor,
    now: Instant,
    running: BTreeSet<u64>,
    last_started: u64,
    replies_due: BTreeSet<ReplyTo>,
    answered: HashMap<ReplyTo, usize>,
    next_reply: ReplyTo,
    stop_at: Option<Instant>,
    exits: usize,
}

impl Run {
    fn apply(&mut self, actions: Vec<Action>) -> Result<(), TestCaseError> {
        for a in actions {
            match a {
                Action::StartScan { scan, .. } => {
                    prop_assert!(self.running.is_empty(), "two scans at once");
                    prop_assert!(!self.s.exited(), "a scan after exit");
                    prop_assert!(scan > self.last_started, "scan ids increase");
                    self.last_started = scan;
                    self.running.insert(scan);
                }
                Action::CancelScan { scan } => {
                    prop_assert!(self.running.remove(&scan), "cancelled a scan not running");
                }
                Action::Reply { to, .. } => {
                    *self.answered.entry(to).or_default() += 1;
                    prop_assert!(self.replies_due.remove(&to), "an answer nobody asked for");
                }
                Action::Exit { by, .. } => {
                    self.exits += 1;
                    prop_assert_eq!(self.exits, 1, "exit once");
                    prop_assert!(by <= self.now + timing().exit_grace);
                    if let Some(t) = self.stop_at {
                        let bound = t + timing().drain + timing().exit_grace;
                        prop_assert!(by <= bound, "a stop completes within drain + grace");
                    }
                    self.running.clear();
                }
                Action::StartDrain | Action::Notify(_) => {}
            }
        }
        Ok(())
    }

    fn event(&mut self, e: Event) -> Result<(), TestCaseError> {
        let a = self.s.handle(self.now, e);
        self.apply(a)
    }

    fn reply(&mut self) -> Option<ReplyTo> {
        self.next_reply += 1;
        self.replies_due.insert(self.next_reply);
        Some(self.next_reply)
    }

    fn wait(&mut self, ms: u64) -> Result<(), TestCaseError> {
        let end = self.now + Duration::from_millis(ms);
        while let Some(w) = self.s.next_wake().filter(|w| *w <= end) {
            self.now = self.now.max(w);
            let a = self.s.poll(self.now);
            self.apply(a)?;
            prop_assert!(
                self.s.next_wake() != Some(w),
                "woken at {w:?} with nothing to do: it would spin"
            );
        }
        self.now = end;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_order_of_events_keeps_the_invariants(steps in proptest::collection::vec(step(), 1..80)) {
        let t0 = Instant::now();
        let mut r = Run {
            s: Supervisor::new(timing(), t0),
            now: t0,
            running: BTreeSet::new(),
            last_started: 0,
            replies_due: BTreeSet::new(),
            answered: HashMap::new(),
            next_reply: 0,
            stop_at: None,
            exits: 0,
        };
        let first = r.s.poll(t0);
        r.apply(first)?;
        for st in steps {
            match st {
                Step::Hup => r.event(Event::Reload { reply: None })?,
                Step::AdminReload => {
                    let to = r.reply();
                    r.event(Event::Reload { reply: to })?
                }
                Step::Term | Step::AdminDrain => {
                    let to = match st { Step::AdminDrain => r.reply(), _ => None };
                    r.stop_at.get_or_insert(r.now);
                    r.event(Event::Stop { reply: to })?
                }
                Step::Int => r.event(Event::Interrupt)?,
                Step::Drained => r.event(Event::Drained)?,
                Step::Finish { stale, outcome } => {
                    let scan = match (stale, r.running.iter().next()) {
                        (false, Some(id)) => *id,
                        _ => r.last_started.saturating_sub(1),
                    };
                    let outcome = match outcome {
                        0 => Outcome::Built {
            luns: 2,
            degraded: false,
        },
                        1 => Outcome::BadConfig("bad".into()),
                        2 => Outcome::Failed("s3 down".into()),
                        _ => Outcome::Fatal("ignored".into()),
                    };
                    if r.running.contains(&scan) {
                        r.running.remove(&scan);
                    }
                    r.event(Event::ScanDone { scan, outcome })?
                }
                Step::Wait(ms) => r.wait(ms)?,
            }
            // Serving always has a next step: a scan running, or one scheduled.
            if !r.s.exited() {
                prop_assert!(r.s.next_wake().is_some(), "a live supervisor always wakes again");
            }
            // A scan never outlives its limit by more than one poll.
            prop_assert!(r.running.len() <= 1);
        }
        // Whatever happened, a stop completes: SIGTERM, then time.
        let t = r.now;
        r.stop_at.get_or_insert(t);
        r.event(Event::Stop { reply: None })?;
        r.wait(timing().drain.as_millis() as u64 + 1)?;
        prop_assert!(r.s.exited(), "stopped within the drain time");
        prop_assert_eq!(r.exits, 1);
        prop_assert!(r.replies_due.is_empty(), "every admin command was answered: {:?}", r.replies_due);
        prop_assert!(r.answered.values().all(|&n| n == 1), "each answered once");
    }
}
