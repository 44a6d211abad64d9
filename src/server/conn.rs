//! One connection's task: read bytes, decode PDUs, feed the state machine, perform the
//! reads it asks for, write what it queues. Errors end this connection only.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::limits::ConnGuard;
use super::writer::Writer;
use super::{Registry, Target};
use crate::login::{LoginEnv, LoginError};
use crate::pdu::{decode, FrameConfig, BHS_LEN};
use crate::session::{Connection, Event, Outbox};
use crate::store::{read_padded, ReadFuture, StoreError};

type ReadDone = (u32, Result<Bytes, StoreError>);

/// The login environment of a connection accepted over the connection limits: every
/// login is answered "out of resources", which initiators retry later.
struct Refusing<'a> {
    registry: &'a Registry,
    reason: &'a str,
}

impl LoginEnv for Refusing<'_> {
    fn new_tsih(&self) -> u16 {
        self.registry.new_tsih()
    }
    fn session_exists(&self, tsih: u16) -> bool {
        self.registry.session_exists(tsih)
    }
    fn admit(&self, _initiator: &str, _isid: [u8; 6]) -> Result<(), LoginError> {
        Err(LoginError::OutOfResources(self.reason.to_string()))
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
    out: Outbox,
    writer: Writer,
    wr: OwnedWriteHalf,
    /// Framing in force; switches after the final login response has been sent.
    cfg: FrameConfig,
    pending: FuturesUnordered<BoxFuture<'static, ReadDone>>,
    registered: Option<Registered>,
    close: Option<String>,
    spare_reads: Vec<crate::session::ReadRequest>,
    /// Why this connection is refused (over a connection limit), if it is.
    refuse: Option<String>,
}

impl Task {
    /// Write what is queued, then act on events and start the reads asked for, until
    /// nothing is left to do without new input.
    async fn settle(&mut self) {
        loop {
            // Register a new session before its login response leaves, so a second
            // login with the same ISID always finds it (reinstatement), but switch
            // framing only after that response is on the wire.
            let mut next_cfg = None;
            for ev in std::mem::take(&mut self.out.events) {
                match ev {
                    Event::LoggedIn(o) => {
                        let p = &o.params;
                        next_cfg = Some(FrameConfig {
                            header_digest: p.header_digest,
                            data_digest: p.data_digest,
                            max_data_segment: p.target_max_recv_data_segment,
                        });
                        let span = tracing::Span::current();
                        span.record("initiator", p.initiator_name.as_str());
                        span.record("tsih", o.tsih);
                        let kill = self
                            .target
                            .registry
                            .register(&p.initiator_name, o.isid, o.tsih);
                        self.registered = Some(Registered {
                            initiator: p.initiator_name.clone(),
                            isid: o.isid,
                            tsih: o.tsih,
                            kill,
                        });
                    }
                    Event::Close { reason } => {
                        self.close.get_or_insert(reason);
                    }
                }
            }
            match self
                .writer
                .flush(&mut self.wr, &mut self.out.frames, self.cfg)
                .await
            {
                Ok(n) => {
                    self.target.stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.close.get_or_insert(format!("write error: {e}"));
                    return;
                }
            }
            if let Some(c) = next_cfg {
                self.cfg = c;
            }
            if self.close.is_some() {
                return;
            }
            if self.out.reads.is_empty() {
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

    /// Decode and handle every complete PDU in `rbuf`.
    async fn drain_input(&mut self, rbuf: &mut BytesMut) {
        loop {
            let raw: Option<[u8; BHS_LEN]> = rbuf.get(..BHS_LEN).and_then(|b| b.try_into().ok());
            match decode(rbuf, &self.cfg) {
                Ok(Some(pdu)) => {
                    if matches!(pdu.header, crate::pdu::Header::ScsiCommand(_)) {
                        self.target.stats.commands.fetch_add(1, Ordering::Relaxed);
                    }
                    let registry = &*self.target.registry;
                    let refusing;
                    let env: &dyn LoginEnv = match &self.refuse {
                        Some(reason) => {
                            refusing = Refusing { registry, reason };
                            &refusing
                        }
                        None => registry,
                    };
                    self.conn.handle(pdu, env, Instant::now(), &mut self.out)
                }
                Ok(None) => return,
                Err(e) => self.conn.pdu_error(&e, raw, &mut self.out),
            }
            // The next PDU's framing may depend on this one (end of login).
            self.settle().await;
            if self.close.is_some() {
                return;
            }
        }
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
    let mut t = Task {
        target,
        conn,
        out: Outbox::default(),
        writer: Writer::default(),
        wr,
        cfg: FrameConfig::LOGIN,
        pending: FuturesUnordered::new(),
        registered: None,
        close: None,
        spare_reads: Vec::new(),
        refuse,
    };
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let never = Arc::new(Notify::new());
    let login_deadline = tokio::time::sleep(t.target.ffp.login_timeout);
    tokio::pin!(login_deadline);
    while t.close.is_none() {
        let kill = t
            .registered
            .as_ref()
            .map_or_else(|| Arc::clone(&never), |r| Arc::clone(&r.kill));
        let logged_in = t.registered.is_some();
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => { t.close = Some("initiator closed the connection".into()); }
                Ok(_) => t.drain_input(&mut rbuf).await,
                Err(e) => { t.close = Some(format!("read error: {e}")); }
            },
            Some((itt, result)) = t.pending.next(), if !t.pending.is_empty() => {
                t.conn.read_done(itt, result, &mut t.out);
                t.settle().await;
            }
            _ = ticker.tick() => {
                t.conn.tick(Instant::now(), &mut t.out);
                t.settle().await;
            }
            _ = &mut login_deadline, if !logged_in => {
                t.close = Some("login timed out".into());
            }
            _ = kill.notified() => {
                t.close = Some("reinstated by a new login from the same initiator".into());
            }
            r = luns_rx.changed() => {
                if r.is_ok() {
                    let luns = luns_rx.borrow_and_update().clone();
                    t.conn.set_luns(luns);
                }
            }
            _ = shutdown.changed() => {
                t.close = Some("target shutting down".into());
            }
        }
    }
    t.conn.end();
    if let Some(r) = &t.registered {
        t.target.registry.unregister(&r.initiator, r.isid, r.tsih);
    }
    info!(
        reason = t.close.as_deref().unwrap_or(""),
        "connection closed"
    );
}
