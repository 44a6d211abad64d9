//! A connection from first byte to close: the login machine, then full feature phase.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{info, warn};

use super::ffp::{FfpSettings, FullFeature};
use super::outbox::{Event, Outbox};
use crate::login::{LoginEnv, LoginMachine, LoginSettings, LoginStep};
use crate::lun::LunTable;
use crate::pdu::{reject_reason, Header, Pdu, PduError, BHS_LEN};
use crate::scsi::exec::TargetPort;
use crate::store::StoreError;

#[derive(Debug)]
enum Phase {
    Login(Box<LoginMachine>),
    Full(Box<FullFeature>),
    Closed,
}

#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    ffp_settings: Arc<FfpSettings>,
    luns: Arc<LunTable>,
    port: Arc<TargetPort>,
    portals: Arc<Vec<String>>,
}

impl Connection {
    pub fn new(
        login: Arc<LoginSettings>,
        ffp_settings: Arc<FfpSettings>,
        luns: Arc<LunTable>,
        port: Arc<TargetPort>,
        portals: Arc<Vec<String>>,
    ) -> Connection {
        Connection {
            phase: Phase::Login(Box::new(LoginMachine::new(login))),
            ffp_settings,
            luns,
            port,
            portals,
        }
    }

    pub fn full_feature(&self) -> Option<&FullFeature> {
        match &self.phase {
            Phase::Full(f) => Some(f),
            _ => None,
        }
    }

    pub fn handle(&mut self, pdu: Pdu, env: &dyn LoginEnv, now: Instant, out: &mut Outbox) {
        match &mut self.phase {
            Phase::Login(m) => {
                let Header::LoginRequest(req) = &pdu.header else {
                    out.close("non-login PDU during login");
                    self.phase = Phase::Closed;
                    return;
                };
                match m.handle(req, &pdu.data, env) {
                    LoginStep::Respond(h, d) => out.push(&Header::LoginResponse(h), Bytes::from(d)),
                    LoginStep::Fail(h, e) => {
                        warn!(initiator = %m.params().initiator_name, error = %e, "login failed");
                        out.push(&Header::LoginResponse(h), Bytes::new());
                        out.close(format!("login failed: {e}"));
                        self.phase = Phase::Closed;
                    }
                    LoginStep::Complete(h, d, outcome) => {
                        out.push(&Header::LoginResponse(h), Bytes::from(d));
                        let p = &outcome.params;
                        info!(
                            initiator = %p.initiator_name,
                            tsih = outcome.tsih,
                            session_type = ?p.session_type,
                            header_digest = p.header_digest,
                            data_digest = p.data_digest,
                            "login complete"
                        );
                        let ffp = FullFeature::new(
                            Arc::clone(&self.ffp_settings),
                            &outcome,
                            Arc::clone(&self.luns),
                            Arc::clone(&self.port),
                            Arc::clone(&self.portals),
                            now,
                        );
                        self.phase = Phase::Full(Box::new(ffp));
                        out.events.push(Event::LoggedIn(outcome));
                    }
                }
            }
            Phase::Full(f) => f.handle(pdu, now, out),
            Phase::Closed => {}
        }
    }

    /// A PDU could not be decoded. Recoverable errors get a Reject; the rest close the
    /// connection (after a Reject where the header can still be trusted).
    pub fn pdu_error(
        &mut self,
        err: &PduError,
        raw: Option<[u8; BHS_LEN]>,
        now: Instant,
        out: &mut Outbox,
    ) {
        warn!(error = %err, "bad PDU");
        let Phase::Full(f) = &mut self.phase else {
            out.close(format!("bad PDU during login: {err}"));
            self.phase = Phase::Closed;
            return;
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
                f.data_digest_failed(pdu, now, out);
                return;
            }
        }
        let reason = match err {
            PduError::DataDigest { .. } => reject_reason::DATA_DIGEST_ERROR,
            PduError::UnknownOpcode(_) => reject_reason::COMMAND_NOT_SUPPORTED,
            _ => reject_reason::PROTOCOL_ERROR,
        };
        if !matches!(err, PduError::HeaderDigest { .. }) {
            if let Some(raw) = raw {
                f.reject(&raw, reason, out);
            }
        }
        if !err.recoverable() {
            out.close(format!("unrecoverable PDU error: {err}"));
            self.phase = Phase::Closed;
        }
    }

    pub fn read_done(&mut self, itt: u32, result: Result<Bytes, StoreError>, out: &mut Outbox) {
        if let Phase::Full(f) = &mut self.phase {
            f.read_done(itt, result, out);
        }
    }

    pub fn tick(&mut self, now: Instant, out: &mut Outbox) {
        if let Phase::Full(f) = &mut self.phase {
            f.tick(now, out);
        }
    }

    /// The connection is closing: release what its session held.
    pub fn end(&mut self) {
        if let Phase::Full(f) = &mut self.phase {
            f.end();
        }
        self.phase = Phase::Closed;
    }

    pub fn set_luns(&mut self, luns: Arc<LunTable>) {
        if let Phase::Full(f) = &mut self.phase {
            f.set_luns(Arc::clone(&luns));
        }
        self.luns = luns;
    }
}
