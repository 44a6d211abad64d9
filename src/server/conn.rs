//! One connection's task, a byte pump around the sans-IO [`Connection`]: received
//! bytes go in, the reads it asks for run against the LUN's store, what it transmits
//! goes to the connection's writer task (see [`super::wire`]), and its timers are
//! armed at the deadline it reports. Reinstatement, LUN table changes and shutdown
//! act whatever the writer is doing. Errors end this connection only.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;
use tracing::{debug, info, warn, Instrument};

use super::control::Control;
use super::limits::ConnGuard;
use super::registry::SessionSlot;
use super::wire::Wire;
use super::{Registry, SessionInfo, Target};
use crate::login::{LoginEnv, LoginError, Redirect, SessionType};
use crate::pdu::Frame;
use crate::session::{Connection, ConnectionConfig, Event, ReadRequest};
use crate::store::served::LunStats;
use crate::store::{read_padded, ReadFuture, ServedLuns, StoreError};

/// The read buffer of a logged-in connection, and of one still logging in.
const READ_BUFFER: usize = 64 * 1024;
const PRE_LOGIN_BUFFER: usize = 1024;

/// How long a closing connection waits for its last response to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The login environment of one connection: the registry's TSIHs and limits, the
/// session slot its login took (held until the session is registered or the
/// connection ends), and the refusal of a connection accepted over the connection
/// limits (every login answered "out of resources", which initiators retry).
struct ConnEnv {
    registry: Arc<Registry>,
    refuse: Option<String>,
    slot: RefCell<Option<SessionSlot>>,
    control: watch::Receiver<Control>,
    /// Which peer a redirect names (connections spread over the peers).
    seq: u64,
}

impl LoginEnv for ConnEnv {
    fn new_tsih(&self) -> u16 {
        self.registry.new_tsih()
    }
    fn session_exists(&self, tsih: u16) -> bool {
        self.registry.session_exists(tsih)
    }
    fn admit(&self, initiator: &str, isid: [u8; 6], kind: SessionType) -> Result<(), LoginError> {
        if let Some(reason) = &self.refuse {
            return Err(LoginError::OutOfResources(reason.clone()));
        }
        let discovery = kind == SessionType::Discovery;
        *self.slot.borrow_mut() = self.registry.reserve(initiator, isid, discovery)?;
        Ok(())
    }
    fn redirect(&self) -> Option<Redirect> {
        self.control.borrow().redirect(self.seq)
    }
}

struct Registered {
    /// A normal session (not discovery).
    normal: bool,
    info: Arc<SessionInfo>,
    kill: Arc<Notify>,
    /// The LUN it read last (its LUN list is only locked for a new one).
    last_lun: Option<u64>,
}

/// A finished read: the task, its LUN and the LUN's counters, when the command arrived, and
/// the bytes or why not.
type ReadDone = (u32, u64, Arc<LunStats>, Instant, Result<Bytes, StoreError>);

struct Pump {
    target: Arc<Target>,
    conn: Connection,
    env: ConnEnv,
    wire: Arc<Wire>,
    /// The stores behind the LUN table the connection presents.
    served: Arc<ServedLuns>,
    pending: FuturesUnordered<BoxFuture<'static, ReadDone>>,
    registered: Option<Registered>,
    /// Why the connection ends, once it does, and whether queued frames still go out
    /// first (a logout or login response) or it just ends.
    close: Option<(String, bool)>,
    /// Frames on their way from the connection to the wire (capacity reused).
    frames: VecDeque<Frame>,
    commands_counted: u64,
    /// The drain's logout request went out (once per connection).
    logout_requested: bool,
    peer: SocketAddr,
    local: SocketAddr,
}

impl Pump {
    /// Apply the operator's ALUA state and drain to this connection.
    fn control(&mut self, c: &Control) {
        self.conn.set_access_state(c.access);
        if let Some(secs) = c.logout_within {
            // Normal sessions only: a discovery session is gone in a moment anyway.
            if !self.logout_requested && self.registered.as_ref().is_some_and(|r| r.normal) {
                info!(
                    within_secs = secs,
                    "draining: asking the initiator to log out"
                );
                self.conn.request_logout(secs);
                self.logout_requested = true;
            }
        }
    }

    /// Act on the connection's events (registering a new session before its login
    /// response is queued, starting the reads it wants) and hand what it transmits
    /// to the writer, until it has nothing more without new input.
    fn settle(&mut self) {
        loop {
            let mut acted = false;
            while let Some(ev) = self.conn.poll_event() {
                acted = true;
                match ev {
                    Event::LoggedIn(o) => self.logged_in(&o),
                    Event::Read(r) => self.start_read(r),
                    Event::Close { reason, flush } => {
                        self.close.get_or_insert((reason, flush));
                    }
                }
            }
            self.conn.drain_transmits(&mut self.frames);
            self.wire.send(&mut self.frames);
            if !acted {
                break;
            }
        }
        let n = self.conn.scsi_commands();
        let new = n - self.commands_counted;
        if new > 0 {
            self.target.stats.commands.fetch_add(new, Ordering::Relaxed);
            self.commands_counted = n;
        }
    }

    /// Read what a command wants from the LUN's store: a cache or mmap hit answers
    /// at once, anything else runs alongside the connection.
    fn start_read(&mut self, r: ReadRequest) {
        let started = Instant::now();
        let Some(backing) = self.served.backing(r.lun) else {
            let e = StoreError::Empty(format!("LUN {}", r.lun));
            let stats = Arc::default();
            return self.read_done(r.itt, r.lun, &stats, started, Err(e));
        };
        // Retirement keeps an image that left the catalog while it is being read.
        backing.touch();
        let stats = Arc::clone(&backing.stats);
        stats.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(reg) = &mut self.registered {
            if reg.last_lun != Some(r.lun) {
                reg.info.note_lun(r.lun);
                reg.last_lun = Some(r.lun);
            }
        }
        let len = usize::try_from(r.len).unwrap_or(usize::MAX);
        match read_padded(&*backing.store, r.offset, len) {
            ReadFuture::Ready(res) => self.read_done(r.itt, r.lun, &stats, started, res),
            ReadFuture::Pending(f) => {
                let (itt, lun) = (r.itt, r.lun);
                self.pending
                    .push(Box::pin(async move { (itt, lun, stats, started, f.await) }));
            }
        }
    }

    fn read_done(
        &mut self,
        itt: u32,
        lun: u64,
        stats: &LunStats,
        started: Instant,
        result: Result<Bytes, StoreError>,
    ) {
        self.target.stats.read_latency.observe(started.elapsed());
        let result = match result {
            Ok(b) => {
                let n = b.len() as u64;
                stats.read_bytes.fetch_add(n, Ordering::Relaxed);
                if let Some(reg) = &self.registered {
                    reg.info.reads.fetch_add(1, Ordering::Relaxed);
                    reg.info.read_bytes.fetch_add(n, Ordering::Relaxed);
                }
                Ok(b)
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                warn!(lun, error = %e, "read failed");
                Err(e.sense())
            }
        };
        self.conn.read_done(itt, result);
    }

    /// Register the new session before its login response can reach the initiator
    /// (so a second login with the same ISID always finds it).
    fn logged_in(&mut self, o: &crate::login::LoginOutcome) {
        let p = &o.params;
        let span = tracing::Span::current();
        span.record("initiator", p.initiator_name.as_str());
        span.record("tsih", o.tsih);
        let normal = p.session_type == crate::login::SessionType::Normal;
        let info = Arc::new(SessionInfo::new(
            &p.initiator_name,
            o.isid,
            o.tsih,
            !normal,
            self.peer,
            self.local,
        ));
        let kill = self.target.registry.register(Arc::clone(&info));
        // Registered: the slot the login held is now counted as a live session.
        self.env.slot.borrow_mut().take();
        self.registered = Some(Registered {
            normal,
            info,
            kill,
            last_lun: None,
        });
        // Logged in while the target drains (the login began before): leave too.
        let c = self.env.control.borrow().clone();
        if c.logout_within.is_some() {
            self.control(&c);
        }
    }

    /// Logged in as a Normal session (which the target's CHAP, where configured,
    /// guards), or as a Discovery session where discovery CHAP is required.
    fn authenticated(&self) -> bool {
        self.registered
            .as_ref()
            .is_some_and(|r| r.normal || self.target.login.discovery_chap.initiator.is_some())
    }

    fn abrupt(&mut self, reason: impl Into<String>) {
        self.close.get_or_insert_with(|| (reason.into(), false));
    }
}

/// A timer that is never due, for a connection with none running.
fn far_future() -> TokioInstant {
    TokioInstant::now() + Duration::from_secs(365 * 24 * 3600)
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    target: Arc<Target>,
    mut shutdown: watch::Receiver<bool>,
    slot: ConnGuard,
    refuse: Option<String>,
) {
    let _ = stream.set_nodelay(true);
    target.stats.connections.fetch_add(1, Ordering::Relaxed);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "no local address");
            return;
        }
    };
    debug!(%local, %peer, "connected");
    let (mut rd, wr) = stream.into_split();
    let mut luns_rx = target.luns.clone();
    let served = luns_rx.borrow_and_update().clone();
    let config = ConnectionConfig {
        login: Arc::clone(&target.login),
        session: Arc::clone(&target.session),
        port: Arc::clone(&target.port),
        portals: Arc::new(target.portals_for(local)),
    };
    let conn = Connection::new(config, Arc::clone(&served.table), Instant::now());
    let wire = Arc::new(Wire::default());
    let stall = target.session.write_timeout;
    let mut writer: JoinHandle<std::io::Result<()>> = tokio::spawn(
        Arc::clone(&wire)
            .write_loop(wr, stall, Arc::clone(&target.stats))
            .in_current_span(),
    );
    let mut control_rx = target.control.clone();
    let control = control_rx.borrow_and_update().clone();
    let env = ConnEnv {
        registry: Arc::clone(&target.registry),
        refuse,
        slot: RefCell::new(None),
        control: target.control.clone(),
        seq: target.stats.connections.load(Ordering::Relaxed),
    };
    let mut t = Pump {
        target,
        conn,
        env,
        wire,
        served,
        pending: FuturesUnordered::new(),
        registered: None,
        close: None,
        frames: VecDeque::new(),
        commands_counted: 0,
        logout_requested: false,
        peer,
        local,
    };
    // The port group's state as it is now (a later login during a drain is asked to
    // leave in `logged_in`).
    t.control(&control);
    // Small until a login completes: a stranger's silent connection costs little.
    let mut rbuf = BytesMut::with_capacity(PRE_LOGIN_BUFFER);
    let evicted = slot.evicted();
    let mut authenticated = false;
    let never = Arc::new(Notify::new());
    // The connection's own timers (login deadline, pings, idle): armed at the
    // earliest deadline it reports; firing early is harmless (it re-reports).
    let timer = tokio::time::sleep_until(far_future());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    let mut writer_done = false;
    while t.close.is_none() {
        if let Some(due) = t.conn.poll_timeout() {
            if armed.is_none_or(|a| due < a) {
                timer.as_mut().reset(TokioInstant::from_std(due));
                armed = Some(due);
            }
        }
        let kill = t
            .registered
            .as_ref()
            .map_or_else(|| Arc::clone(&never), |r| Arc::clone(&r.kill));
        // Read commands (and finish reads) only while the writer keeps up.
        let room = t.wire.has_room();
        tokio::select! {
            r = rd.read_buf(&mut rbuf), if room => match r {
                Ok(0) => t.abrupt("initiator closed the connection"),
                Ok(_) => {
                    t.conn.handle_input(&mut rbuf, &t.env, Instant::now());
                    t.settle();
                    if !authenticated && t.authenticated() {
                        authenticated = true;
                        slot.authenticated();
                        rbuf.reserve(READ_BUFFER);
                    }
                }
                Err(e) => t.abrupt(format!("read error: {e}")),
            },
            Some((itt, lun, stats, started, result)) = t.pending.next(), if room && !t.pending.is_empty() => {
                t.read_done(itt, lun, &stats, started, result);
                t.settle();
            }
            _ = t.wire.room(), if !room => {}
            r = &mut writer => {
                writer_done = true;
                match r {
                    Ok(Ok(())) => t.abrupt("writer finished"),
                    Ok(Err(e)) => t.abrupt(format!("write failed: {e}")),
                    Err(e) => t.abrupt(format!("writer task ended: {e}")),
                }
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                t.conn.handle_timeout(Instant::now());
                t.settle();
            }
            _ = kill.notified() => {
                t.abrupt("reinstated by a new login from the same initiator");
            }
            _ = evicted.notified(), if !authenticated => {
                t.abrupt("unauthenticated connection closed to make room (max_unauthenticated)");
            }
            r = luns_rx.changed() => {
                if r.is_ok() {
                    let served = luns_rx.borrow_and_update().clone();
                    t.conn.set_luns(Arc::clone(&served.table));
                    t.served = served;
                }
            }
            r = control_rx.changed() => {
                if r.is_ok() {
                    let c = control_rx.borrow_and_update().clone();
                    t.control(&c);
                    t.settle();
                }
            }
            _ = shutdown.changed() => t.abrupt("target shutting down"),
        }
    }
    t.conn.end();
    if let Some(r) = &t.registered {
        t.target.registry.unregister(&r.info);
    }
    if !writer_done {
        if t.close.as_ref().is_some_and(|(_, flush)| *flush) {
            // A logout or login response still goes out, if the peer takes it soon.
            t.wire.finish();
            let grace = stall.min(CLOSE_GRACE);
            if tokio::time::timeout(grace, &mut writer).await.is_err() {
                writer.abort();
            }
        } else {
            writer.abort();
        }
    }
    info!(
        reason = t.close.as_ref().map_or("", |(r, _)| r.as_str()),
        "connection closed"
    );
}
