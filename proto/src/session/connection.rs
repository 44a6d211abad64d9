//! One connection from first byte to close, owning its wire as quinn-proto's
//! `Connection` does: received bytes go in ([`Connection::handle_input`]), frames
//! ready for the socket come out ([`Connection::poll_transmit`]), and so do events for
//! the I/O layer ([`Connection::poll_event`]: logged in, image bytes wanted, close).
//! Framing (the switch to the negotiated digests at the end of login) and every timer
//! (login deadline, NOP-In pings, idle limits) live here; time is passed in.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{info, warn};

use super::full_feature::{FullFeature, SessionSettings};
use super::outbox::{Event, Outbox};
use crate::login::{LoginEnv, LoginMachine, LoginSettings, LoginStep};
use crate::lun_table::LunTable;
use crate::pdu::{decode, Frame, FrameConfig, Header, Pdu, PduError, RejectReason, BHS_LEN};
use crate::scsi::Sense;
use crate::scsi::{AccessState, TargetPort};

#[derive(Debug)]
enum Phase {
    Login(Box<LoginMachine>),
    Full(Box<FullFeature>),
    Closed,
}

/// What a connection is built from: the target's settings and what it presents.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub login: Arc<LoginSettings>,
    pub session: Arc<SessionSettings>,
    pub port: Arc<TargetPort>,
    /// SendTargets `TargetAddress` values for this connection.
    pub portals: Arc<Vec<String>>,
}

#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    config: ConnectionConfig,
    luns: Arc<LunTable>,
    /// The target port group's ALUA state, handed to the session at login.
    access: AccessState,
    /// Framing of what we read: switches as soon as the login completes.
    rx: FrameConfig,
    out: Outbox,
    login_deadline: Instant,
    /// A close has been asked for: nothing more is read and no timer runs.
    closing: bool,
    scsi_commands: u64,
}

impl Connection {
    /// A connection accepted at `now`; its login must complete within the login
    /// timeout.
    pub fn new(config: ConnectionConfig, luns: Arc<LunTable>, now: Instant) -> Connection {
        Connection {
            phase: Phase::Login(Box::new(LoginMachine::new(Arc::clone(&config.login)))),
            login_deadline: now + config.session.login_timeout,
            config,
            luns,
            access: AccessState::default(),
            rx: FrameConfig::LOGIN,
            out: Outbox::default(),
            closing: false,
            scsi_commands: 0,
        }
    }

    pub fn full_feature(&self) -> Option<&FullFeature> {
        match &self.phase {
            Phase::Full(f) => Some(f),
            _ => None,
        }
    }

    /// SCSI commands received so far (for the I/O layer's counters).
    pub fn scsi_commands(&self) -> u64 {
        self.scsi_commands
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Decode and handle every complete PDU at the front of `rbuf`; what is left is
    /// the start of the next one. Nothing is read once the connection is closing.
    pub fn handle_input(&mut self, rbuf: &mut BytesMut, env: &dyn LoginEnv, now: Instant) {
        while !self.closing {
            let raw: Option<[u8; BHS_LEN]> = rbuf.get(..BHS_LEN).and_then(|b| b.try_into().ok());
            match decode(rbuf, &self.rx) {
                Ok(Some(pdu)) => self.handle_pdu(pdu, env, now),
                Ok(None) => return,
                Err(e) => self.pdu_error(&e, raw, now),
            }
        }
    }

    /// The next frame to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.out.frames.pop_front()
    }

    /// Every frame queued so far, moved into `to` (which keeps its capacity).
    pub fn drain_transmits(&mut self, to: &mut std::collections::VecDeque<Frame>) {
        to.extend(self.out.frames.drain(..));
    }

    /// The next event for the I/O layer. A `LoggedIn` event comes out before the
    /// final login response can be transmitted only if the caller takes events
    /// before frames, which it must (the session has to be registered first).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When the connection next needs [`Self::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closing {
            return None;
        }
        match &self.phase {
            Phase::Login(_) => Some(self.login_deadline),
            Phase::Full(f) => f.poll_timeout(),
            Phase::Closed => None,
        }
    }

    /// Run the timers due at `now` (early calls do nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        match &mut self.phase {
            Phase::Login(_) if now >= self.login_deadline => self.abort("login timed out"),
            Phase::Full(f) => f.handle_timeout(now, &mut self.out),
            _ => {}
        }
        self.note_close();
    }

    /// The image bytes a `Read` event asked for arrived, or the sense of why not.
    pub fn read_done(&mut self, itt: u32, result: Result<Bytes, Sense>) {
        if let Phase::Full(f) = &mut self.phase {
            f.read_done(itt, result, &mut self.out);
        }
    }

    /// Close from outside (peer gone, shutdown, reinstated): queued frames are not
    /// wanted any more.
    pub fn abort(&mut self, reason: impl Into<String>) {
        if !self.closing {
            self.out.abort(reason);
            self.closing = true;
        }
    }

    /// The connection is closing: release what its session held.
    pub fn end(&mut self) {
        if let Phase::Full(f) = &mut self.phase {
            f.end();
        }
        self.phase = Phase::Closed;
        self.closing = true;
    }

    /// The target port group's ALUA state changed (sessions hear of it once per LUN).
    pub fn set_access_state(&mut self, access: AccessState) {
        if let Phase::Full(f) = &mut self.phase {
            f.set_access_state(access);
        }
        self.access = access;
    }

    /// The target is draining: ask a logged-in initiator to log out within
    /// `within_secs`. Nothing for a connection still logging in.
    pub fn request_logout(&mut self, within_secs: u16) {
        if let Phase::Full(f) = &mut self.phase {
            f.request_logout(within_secs, &mut self.out);
        }
    }

    pub fn set_luns(&mut self, luns: Arc<LunTable>) {
        if let Phase::Full(f) = &mut self.phase {
            f.set_luns(Arc::clone(&luns));
        }
        self.luns = luns;
    }

    fn note_close(&mut self) {
        if !self.closing {
            self.closing = self
                .out
                .events
                .iter()
                .any(|e| matches!(e, Event::Close { .. }));
        }
    }

    /// End the connection after what is queued (a Reject or login response) goes
    /// out; the session's state is released by [`Self::end`].
    fn fail(&mut self, reason: String) {
        self.out.close(reason);
        self.closing = true;
    }

    fn handle_pdu(&mut self, pdu: Pdu, env: &dyn LoginEnv, now: Instant) {
        if matches!(pdu.header, Header::ScsiCommand(_)) {
            self.scsi_commands += 1;
        }
        match &mut self.phase {
            Phase::Login(m) => {
                let Header::LoginRequest(req) = &pdu.header else {
                    return self.fail("non-login PDU during login".into());
                };
                match m.handle(req, &pdu.data, env) {
                    LoginStep::Respond(h, d) => {
                        self.out.push(&Header::LoginResponse(h), Bytes::from(d))
                    }
                    LoginStep::Fail(h, e) => {
                        warn!(initiator = %m.params().initiator_name, error = %e, "login failed");
                        let text = Bytes::from(e.response_text());
                        self.out.push(&Header::LoginResponse(h), text);
                        self.fail(format!("login failed: {e}"));
                    }
                    LoginStep::Complete(h, d, outcome) => {
                        self.out.push(&Header::LoginResponse(h), Bytes::from(d));
                        self.logged_in(outcome, now);
                    }
                }
            }
            Phase::Full(f) => f.handle(pdu, now, &mut self.out),
            Phase::Closed => {}
        }
        self.note_close();
    }

    /// The final login response is queued under the login framing; from here on
    /// both directions use the negotiated digests.
    fn logged_in(&mut self, outcome: Box<crate::login::LoginOutcome>, now: Instant) {
        let p = &outcome.params;
        info!(
            initiator = %p.initiator_name,
            tsih = outcome.tsih,
            session_type = ?p.session_type,
            header_digest = p.header_digest,
            data_digest = p.data_digest,
            "login complete"
        );
        let framing = FrameConfig {
            header_digest: p.header_digest,
            data_digest: p.data_digest,
            max_data_segment: p.target_max_recv_data_segment,
        };
        self.rx = framing;
        self.out.framing = framing;
        let ffp = FullFeature::new(
            Arc::clone(&self.config.session),
            &outcome,
            Arc::clone(&self.luns),
            Arc::clone(&self.config.port),
            Arc::clone(&self.config.portals),
            now,
        )
        .with_access(self.access);
        self.phase = Phase::Full(Box::new(ffp));
        self.out.events.push_back(Event::LoggedIn(outcome));
    }

    /// A PDU could not be decoded. Recoverable errors get a Reject; the rest close the
    /// connection (after a Reject where the header can still be trusted).
    fn pdu_error(&mut self, err: &PduError, raw: Option<[u8; BHS_LEN]>, now: Instant) {
        warn!(error = %err, "bad PDU");
        let Phase::Full(f) = &mut self.phase else {
            return self.fail(format!("bad PDU during login: {err}"));
        };
        // Only the data failed its digest: the header (checked by its own digest, if
        // any) still says what the PDU was, and section 7.8 says what follows.
        if let (PduError::DataDigest { .. }, Some(raw)) = (err, raw) {
            if let Ok(header) = Header::parse(&raw) {
                let pdu = Pdu {
                    header,
                    raw_bhs: raw,
                    ahs: Bytes::new(),
                    data: Bytes::new(),
                };
                f.data_digest_failed(pdu, now, &mut self.out);
                return self.note_close();
            }
        }
        let reason = match err {
            PduError::DataDigest { .. } => RejectReason::DataDigestError,
            PduError::UnknownOpcode(_) => RejectReason::CommandNotSupported,
            _ => RejectReason::ProtocolError,
        };
        if !matches!(err, PduError::HeaderDigest { .. }) {
            if let Some(raw) = raw {
                f.reject(&raw, reason, &mut self.out);
            }
        }
        if !err.recoverable() {
            self.fail(format!("unrecoverable PDU error: {err}"));
        }
        self.note_close();
    }
}
