//! One connection's task: read bytes, decode PDUs, feed the state machine, perform the
//! reads it asks for, and hand what it sends to the connection's writer task (see
//! [`super::wire`]). Timers, reinstatement and shutdown act whatever the writer is
//! doing. Errors end this connection only.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use super::limits::ConnGuard;
use super::registry::SessionSlot;
use super::wire::Wire;
use super::{Registry, Target};
use crate::login::{LoginEnv, LoginError};
use crate::pdu::{decode, FrameConfig, BHS_LEN};
use crate::session::{Connection, Event, Outbox};
use crate::store::{read_padded, ReadFuture, StoreError};

type ReadDone = (u32, Result<Bytes, StoreError>);

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
}

impl LoginEnv for ConnEnv {
    fn new_tsih(&self) -> u16 {
        self.registry.new_tsih()
    }
    fn session_exists(&self, tsih: u16) -> bool {
        self.registry.session_exists(tsih)
    }
    fn admit(&self, initiator: &str, isid: [u8; 6]) -> Result<(), LoginError> {
        if let Some(reason) = &self.refuse {
            return Err(LoginError::OutOfResources(reason.clone()));
        }
        *self.slot.borrow_mut() = self.registry.reserve(initiator, isid)?;
        Ok(())
    }
}

struct Registered {
    initiator: String,
    isid: [u8; 6],
    tsih: u16,
    kill: Arc<Notify>,
}

struct Task {
    target: Arc<Target>,
    conn: Connection,
    env: ConnEnv,
    out: Outbox,
    wire: Arc<Wire>,
    /// Framing of what we read; switches as soon as the login completes (what we
    /// write switches in the writer, after the final login response).
    cfg: FrameConfig,
    pending: FuturesUnordered<BoxFuture<'static, ReadDone>>,
    registered: Option<Registered>,
    /// Why the connection ends, once it does, and whether queued frames still go out
    /// first (a logout or login response) or it just ends.
    close: Option<(String, bool)>,
    spare_reads: Vec<crate::session::ReadRequest>,
}

impl Task {
    /// Act on the events the state machine raised, queue what it sends and start the
    /// reads it asks for, until nothing is left to do without new input.
    fn settle(&mut self) {
        loop {
            for ev in std::mem::take(&mut self.out.events) {
                match ev {
                    Event::LoggedIn(o) => self.logged_in(&o),
                    Event::Close { reason, flush } => {
                        self.close.get_or_insert((reason, flush));
                    }
                }
            }
            self.wire.send(&mut self.out.frames);
            if self.close.is_some() || self.out.reads.is_empty() {
                return;
            }
            // Swap with a spare list so both keep their capacity: no allocation per read.
            std::mem::swap(&mut self.out.reads, &mut self.spare_reads);
            for r in self.spare_reads.drain(..) {
                let store = self
                    .conn
                    .full_feature()
                    .and_then(|f| f.luns().get(r.lun).map(|l| Arc::clone(&l.store)));
                let Some(store) = store else {
                    self.conn.read_done(
                        r.itt,
                        Err(StoreError::Empty(format!("LUN {}", r.lun))),
                        &mut self.out,
                    );
                    continue;
                };
                let len = usize::try_from(r.len).unwrap_or(usize::MAX);
                match read_padded(&*store, r.offset, len) {
                    ReadFuture::Ready(res) => self.conn.read_done(r.itt, res, &mut self.out),
                    ReadFuture::Pending(f) => {
                        let itt = r.itt;
                        self.pending.push(Box::pin(async move { (itt, f.await) }));
                    }
                }
            }
        }
    }

    /// Register the new session before its login response can reach the initiator
    /// (so a second login with the same ISID always finds it), and switch framing:
    /// ours for reading now, the writer's after that response.
    fn logged_in(&mut self, o: &crate::login::LoginOutcome) {
        let p = &o.params;
        let cfg = FrameConfig {
            header_digest: p.header_digest,
            data_digest: p.data_digest,
            max_data_segment: p.target_max_recv_data_segment,
        };
        self.wire.send(&mut self.out.frames);
        self.wire.set_framing(cfg);
        self.cfg = cfg;
        let span = tracing::Span::current();
        span.record("initiator", p.initiator_name.as_str());
        span.record("tsih", o.tsih);
        let kill = self
            .target
            .registry
            .register(&p.initiator_name, o.isid, o.tsih);
        // Registered: the slot the login held is now counted as a live session.
        self.env.slot.borrow_mut().take();
        self.registered = Some(Registered {
            initiator: p.initiator_name.clone(),
            isid: o.isid,
            tsih: o.tsih,
            kill,
        });
    }

    /// Decode and handle every complete PDU in `rbuf`.
    fn drain_input(&mut self, rbuf: &mut BytesMut) {
        loop {
            let raw: Option<[u8; BHS_LEN]> = rbuf.get(..BHS_LEN).and_then(|b| b.try_into().ok());
            match decode(rbuf, &self.cfg) {
                Ok(Some(pdu)) => {
                    if matches!(pdu.header, crate::pdu::Header::ScsiCommand(_)) {
                        self.target.stats.commands.fetch_add(1, Ordering::Relaxed);
                    }
                    self.conn
                        .handle(pdu, &self.env, Instant::now(), &mut self.out)
                }
                Ok(None) => return,
                Err(e) => self.conn.pdu_error(&e, raw, Instant::now(), &mut self.out),
            }
            // The next PDU's framing may depend on this one (end of login).
            self.settle();
            if self.close.is_some() {
                return;
            }
        }
    }

    fn abrupt(&mut self, reason: impl Into<String>) {
        self.close.get_or_insert_with(|| (reason.into(), false));
    }
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    target: Arc<Target>,
    mut shutdown: watch::Receiver<bool>,
    _slot: ConnGuard,
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
    let luns = luns_rx.borrow_and_update().clone();
    let conn = Connection::new(
        Arc::clone(&target.login),
        Arc::clone(&target.ffp),
        luns,
        Arc::clone(&target.port),
        Arc::new(target.portals_for(local)),
    );
    let wire = Arc::new(Wire::default());
    let stall = target.ffp.write_timeout;
    let mut writer: JoinHandle<std::io::Result<()>> = tokio::spawn(
        Arc::clone(&wire)
            .write_loop(wr, stall, Arc::clone(&target.stats))
            .in_current_span(),
    );
    let env = ConnEnv {
        registry: Arc::clone(&target.registry),
        refuse,
        slot: RefCell::new(None),
    };
    let mut t = Task {
        target,
        conn,
        env,
        out: Outbox::default(),
        wire,
        cfg: FrameConfig::LOGIN,
        pending: FuturesUnordered::new(),
        registered: None,
        close: None,
        spare_reads: Vec::new(),
    };
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let never = Arc::new(Notify::new());
    let login_deadline = tokio::time::sleep(t.target.ffp.login_timeout);
    tokio::pin!(login_deadline);
    let mut writer_done = false;
    while t.close.is_none() {
        let kill = t
            .registered
            .as_ref()
            .map_or_else(|| Arc::clone(&never), |r| Arc::clone(&r.kill));
        let logged_in = t.registered.is_some();
        // Read commands (and finish reads) only while the writer keeps up.
        let room = t.wire.has_room();
        tokio::select! {
            r = rd.read_buf(&mut rbuf), if room => match r {
                Ok(0) => t.abrupt("initiator closed the connection"),
                Ok(_) => t.drain_input(&mut rbuf),
                Err(e) => t.abrupt(format!("read error: {e}")),
            },
            Some((itt, result)) = t.pending.next(), if room && !t.pending.is_empty() => {
                t.conn.read_done(itt, result, &mut t.out);
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
            _ = ticker.tick() => {
                t.conn.tick(Instant::now(), &mut t.out);
                t.settle();
            }
            _ = &mut login_deadline, if !logged_in => t.abrupt("login timed out"),
            _ = kill.notified() => {
                t.abrupt("reinstated by a new login from the same initiator");
            }
            r = luns_rx.changed() => {
                if r.is_ok() {
                    let luns = luns_rx.borrow_and_update().clone();
                    t.conn.set_luns(luns);
                }
            }
            _ = shutdown.changed() => t.abrupt("target shutting down"),
        }
    }
    t.conn.end();
    if let Some(r) = &t.registered {
        t.target.registry.unregister(&r.initiator, r.isid, r.tsih);
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
