//! The login state machine of one connection: stage transitions (security, then
//! operational, then full feature), multi-PDU text in both directions (the C bit),
//! required keys, target declarations and TSIH assignment.

use std::sync::Arc;

use super::chap::{self, ChapPolicy, ChapState};
use super::key_value::{encode_pairs, parse_pairs};
use super::negotiate::Negotiator;
use super::params::{NegotiationPrefs, SessionParams, SessionType};
use super::{LoginError, LoginStatus};
use crate::pdu::{LoginRequest, LoginResponse};

pub const STAGE_SECURITY: u8 = 0;
pub const STAGE_OPERATIONAL: u8 = 1;
pub const STAGE_FULL_FEATURE: u8 = 3;

/// During login the RFC default MaxRecvDataSegmentLength (8192) bounds every PDU.
const LOGIN_SEGMENT: usize = 8192;

/// Target-wide settings the login machine needs.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub target_name: String,
    pub target_alias: Option<String>,
    pub portal_group_tag: u16,
    pub prefs: NegotiationPrefs,
    /// Bound on one login's reassembled text.
    pub max_text_bytes: usize,
    pub max_keys: usize,
    /// CmdSN window granted at login (MaxCmdSN = ExpCmdSN + window - 1).
    pub cmd_window: u32,
    /// CHAP for normal sessions; required when initiator credentials are set.
    pub chap: ChapPolicy,
    /// CHAP for discovery sessions, configured separately.
    pub discovery_chap: ChapPolicy,
    /// Initiator names allowed to log in to the target (empty: everyone).
    pub allowed_initiators: Vec<String>,
}

impl LoginSettings {
    pub fn new(target_name: impl Into<String>) -> LoginSettings {
        LoginSettings {
            target_name: target_name.into(),
            target_alias: None,
            portal_group_tag: 1,
            prefs: NegotiationPrefs::default(),
            max_text_bytes: 64 * 1024,
            max_keys: 256,
            cmd_window: 128,
            chap: ChapPolicy::default(),
            discovery_chap: ChapPolicy::default(),
            allowed_initiators: Vec::new(),
        }
    }

    /// Whether the ACL lets this initiator log in to (and discover) the target.
    pub fn may_access(&self, initiator: &str) -> bool {
        let acl = &self.allowed_initiators;
        acl.is_empty() || acl.iter().any(|a| a.eq_ignore_ascii_case(initiator))
    }

    fn chap_for(&self, t: SessionType) -> &ChapPolicy {
        match t {
            SessionType::Normal => &self.chap,
            SessionType::Discovery => &self.discovery_chap,
        }
    }
}

/// What the login machine asks of the rest of the target.
pub trait LoginEnv {
    /// A fresh, non-zero TSIH.
    fn new_tsih(&self) -> u16;
    fn session_exists(&self, tsih: u16) -> bool;
    /// Whether this initiator may log in to the named target (ACLs).
    fn allowed(&self, _initiator: &str) -> bool {
        true
    }
    /// Whether a new session from this initiator fits the configured limits; a login
    /// with an ISID that already has a session of its type (reinstatement) is always
    /// admitted. Asked only once the login has authenticated (CHAP where required)
    /// and is about to enter full feature phase: a stranger takes no session slot.
    fn admit(
        &self,
        _initiator: &str,
        _isid: [u8; 6],
        _kind: SessionType,
    ) -> Result<(), LoginError> {
        Ok(())
    }
    /// Whether logins go elsewhere now (a draining target): every new login is
    /// answered with this at its first request.
    fn redirect(&self) -> Option<Redirect> {
        None
    }
}

/// Where a draining target sends new logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// Target moved temporarily (0101h) to this `TargetAddress` (host:port,tag).
    To(String),
    /// Service unavailable (0301h): no peer to send the initiator to.
    Unavailable,
}

/// Everything the full-feature phase needs from a completed login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub params: SessionParams,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub cid: u16,
    pub exp_cmd_sn: u32,
    pub next_stat_sn: u32,
    /// Whether the ACL lets this initiator see the target: a discovery session of an
    /// initiator that may not log in is told of no targets.
    pub target_visible: bool,
}

#[derive(Debug)]
pub enum LoginStep {
    /// Send this response; the login goes on.
    Respond(LoginResponse, Vec<u8>),
    /// Send this response; the connection enters full feature phase.
    Complete(LoginResponse, Vec<u8>, Box<LoginOutcome>),
    /// Send this response and close the connection.
    Fail(LoginResponse, LoginError),
}

#[derive(Debug)]
struct First {
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
}

#[derive(Debug)]
struct PendingOut {
    text: Vec<u8>,
    sent: usize,
    last: LoginResponse,
    outcome: Option<Box<LoginOutcome>>,
}

#[derive(Debug)]
pub struct LoginMachine {
    settings: Arc<LoginSettings>,
    neg: Negotiator,
    first: Option<First>,
    stage: u8,
    identified: bool,
    auth_done: bool,
    auth_offered: bool,
    chap: Option<ChapState>,
    declared_tpgt: bool,
    declared_mrdsl: bool,
    /// Every key the initiator has sent in this login: RFC 7143 section 6.1 makes a
    /// second declaration of any key a protocol error. Bounded by `max_keys`.
    received: Vec<String>,
    stat_sn: u32,
    pending_in: Vec<u8>,
    pending_out: Option<PendingOut>,
}

impl LoginMachine {
    pub fn new(settings: Arc<LoginSettings>) -> LoginMachine {
        let neg = Negotiator::new(settings.prefs.clone());
        LoginMachine {
            settings,
            neg,
            first: None,
            stage: STAGE_SECURITY,
            identified: false,
            auth_done: false,
            auth_offered: false,
            chap: None,
            declared_tpgt: false,
            declared_mrdsl: false,
            received: Vec::new(),
            stat_sn: 0,
            pending_in: Vec::new(),
            pending_out: None,
        }
    }

    /// Parameters negotiated so far (initiator name, session type...).
    pub fn params(&self) -> &SessionParams {
        &self.neg.params
    }

    pub fn handle(&mut self, req: &LoginRequest, data: &[u8], env: &dyn LoginEnv) -> LoginStep {
        match self.step(req, data, env) {
            Ok(step) => step,
            Err(e) => {
                let mut h = self.response(req);
                let st = e.status();
                h.status_class = st.class;
                h.status_detail = st.detail;
                h.csg = 0;
                h.nsg = 0;
                LoginStep::Fail(h, e)
            }
        }
    }

    fn response(&mut self, req: &LoginRequest) -> LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        LoginResponse {
            transit: false,
            cont: false,
            csg: self.stage,
            nsg: 0,
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            stat_sn,
            exp_cmd_sn: req.cmd_sn,
            max_cmd_sn: req.cmd_sn.wrapping_add(self.settings.cmd_window.max(1) - 1),
            status_class: LoginStatus::SUCCESS.class,
            status_detail: LoginStatus::SUCCESS.detail,
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        env: &dyn LoginEnv,
    ) -> Result<LoginStep, LoginError> {
        match &self.first {
            None => {
                if req.version_min > 0 || req.version_max < req.version_min {
                    return Err(LoginError::Version {
                        min: req.version_min,
                        max: req.version_max,
                    });
                }
                if req.csg != STAGE_SECURITY && req.csg != STAGE_OPERATIONAL {
                    return Err(LoginError::Protocol("login must start in stage 0 or 1"));
                }
                self.first = Some(First {
                    isid: req.isid,
                    tsih: req.tsih,
                    cid: req.cid,
                });
                self.stage = req.csg;
                self.stat_sn = req.exp_stat_sn;
            }
            Some(f) => {
                if f.isid != req.isid || f.tsih != req.tsih || f.cid != req.cid {
                    return Err(LoginError::Protocol(
                        "ISID, TSIH or CID changed during login",
                    ));
                }
                if req.csg != self.stage {
                    return Err(LoginError::Protocol("CSG does not match the current stage"));
                }
            }
        }

        if self.pending_out.is_some() {
            if !data.is_empty() || req.cont {
                return Err(LoginError::Protocol(
                    "initiator sent text while a response was being continued",
                ));
            }
            return Ok(self.next_chunk(req));
        }

        if self.pending_in.len() + data.len() > self.settings.max_text_bytes {
            return Err(LoginError::TooLarge(self.settings.max_text_bytes));
        }
        self.pending_in.extend_from_slice(data);
        if req.cont {
            // More text follows: acknowledge with an empty response (section 6.6).
            let h = self.response(req);
            return Ok(LoginStep::Respond(h, Vec::new()));
        }
        let text = std::mem::take(&mut self.pending_in);
        let pairs = parse_pairs(&text, self.settings.max_keys)?;
        self.receive_once(&pairs)?;

        let mut answers: Vec<(String, String)> = Vec::new();
        let is_auth_key = |k: &str| k == "AuthMethod" || k.starts_with("CHAP_");
        for (k, v) in pairs.iter().filter(|(k, _)| !is_auth_key(k)) {
            if let Some(a) = self.neg.offer(k, v)? {
                answers.push((k.clone(), a));
            }
        }
        // Authentication keys last: which policy applies depends on SessionType.
        self.authenticate(&pairs, &mut answers)?;
        if !self.identified {
            self.identify(env)?;
        }
        let policy_requires = self
            .settings
            .chap_for(self.neg.params.session_type)
            .initiator
            .is_some();
        if policy_requires && self.stage == STAGE_OPERATIONAL && !self.auth_done {
            return Err(LoginError::Auth(
                "CHAP is required: the security stage was skipped",
            ));
        }
        let normal = self.neg.params.session_type == SessionType::Normal;
        if normal && !self.declared_tpgt {
            self.declared_tpgt = true;
            if let Some(alias) = &self.settings.target_alias {
                answers.push(("TargetAlias".into(), alias.clone()));
            }
            answers.push((
                "TargetPortalGroupTag".into(),
                self.settings.portal_group_tag.to_string(),
            ));
        }

        let mut last = self.response(req);
        let mut outcome = None;
        let chap_in_progress = matches!(
            self.chap,
            Some(ChapState::Chosen) | Some(ChapState::Challenged { .. })
        );
        if req.transit && self.stage == STAGE_SECURITY && chap_in_progress {
            // Mid-exchange: answer without transiting; the initiator goes on.
        } else if req.transit {
            let nsg = req.nsg;
            if nsg <= self.stage || (nsg != STAGE_OPERATIONAL && nsg != STAGE_FULL_FEATURE) {
                return Err(LoginError::Protocol("invalid next stage"));
            }
            if self.stage == STAGE_SECURITY && !self.auth_done {
                // AuthMethod=None is implied when the initiator skips negotiating it.
                if self.auth_offered || policy_requires {
                    return Err(LoginError::Auth("no acceptable AuthMethod"));
                }
                self.auth_done = true;
            }
            last.transit = true;
            last.nsg = nsg;
            if nsg == STAGE_FULL_FEATURE {
                outcome = Some(self.complete(req, env)?);
                last.tsih = outcome.as_ref().map_or(0, |o| o.tsih);
            }
        }
        if !self.declared_mrdsl && (self.stage == STAGE_OPERATIONAL || outcome.is_some()) {
            self.declared_mrdsl = true;
            answers.push((
                "MaxRecvDataSegmentLength".into(),
                self.settings.prefs.max_recv_data_segment.to_string(),
            ));
        }
        let mut out = Vec::new();
        encode_pairs(&answers, &mut out);
        if out.len() <= LOGIN_SEGMENT {
            if last.transit {
                self.stage = last.nsg;
            }
            return Ok(finish(last, out, outcome));
        }
        // Too long for one PDU: send it in pieces, each answered by an empty request.
        let mut first = last.clone();
        first.transit = false;
        first.cont = true;
        first.nsg = 0;
        first.csg = last.csg;
        first.tsih = req.tsih;
        let chunk = out[..LOGIN_SEGMENT].to_vec();
        self.pending_out = Some(PendingOut {
            text: out,
            sent: LOGIN_SEGMENT,
            last,
            outcome,
        });
        Ok(LoginStep::Respond(first, chunk))
    }

    /// Each key may be sent once per login, and the keys that say who is logging in
    /// to what only in the first request: authentication, the ACL and the session
    /// limits are decided on them once, so they must never change afterwards.
    fn receive_once(&mut self, pairs: &[(String, String)]) -> Result<(), LoginError> {
        for (k, _) in pairs {
            if self.received.iter().any(|r| r == k) {
                return Err(LoginError::Redeclared(k.clone()));
            }
            if self.identified && super::keys::is_identity(k) {
                return Err(LoginError::LateIdentity(k.clone()));
            }
            if self.received.len() >= self.settings.max_keys {
                return Err(LoginError::Text(super::TextError::TooManyKeys(
                    self.settings.max_keys,
                )));
            }
            self.received.push(k.clone());
        }
        Ok(())
    }

    /// AuthMethod and the CHAP keys of one request.
    fn authenticate(
        &mut self,
        pairs: &[(String, String)],
        answers: &mut Vec<(String, String)>,
    ) -> Result<(), LoginError> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.as_str())
        };
        let policy = self.settings.chap_for(self.neg.params.session_type).clone();
        let required = policy.initiator.is_some();
        if let Some(v) = get("AuthMethod") {
            if self.stage != STAGE_SECURITY {
                return Err(LoginError::Protocol(
                    "AuthMethod outside the security stage",
                ));
            }
            self.auth_offered = true;
            let offered: Vec<&str> = v.split(',').collect();
            let chosen = if required {
                if !offered.contains(&"CHAP") {
                    return Err(LoginError::Auth("CHAP is required and was not offered"));
                }
                self.chap = Some(ChapState::Chosen);
                "CHAP"
            } else if offered.contains(&"None") {
                self.auth_done = true;
                "None"
            } else {
                "Reject"
            };
            answers.push(("AuthMethod".into(), chosen.into()));
        }
        if let Some(a) = get("CHAP_A") {
            if self.chap != Some(ChapState::Chosen) {
                return Err(LoginError::Protocol("CHAP_A without AuthMethod=CHAP"));
            }
            let (state, ans) = chap::challenge(&policy, a)?;
            self.chap = Some(state);
            answers.extend(ans);
        }
        if get("CHAP_R").is_some() || get("CHAP_N").is_some() {
            let Some(state) = &self.chap else {
                return Err(LoginError::Protocol("CHAP_R without a challenge"));
            };
            let ans = chap::verify(
                &policy,
                state,
                get("CHAP_N"),
                get("CHAP_R"),
                get("CHAP_I"),
                get("CHAP_C"),
            )?;
            self.chap = Some(ChapState::Done);
            self.auth_done = true;
            answers.extend(ans);
        }
        Ok(())
    }

    fn next_chunk(&mut self, req: &LoginRequest) -> LoginStep {
        let mut h = self.response(req);
        let Some(mut p) = self.pending_out.take() else {
            return LoginStep::Respond(h, Vec::new());
        };
        let end = (p.sent + LOGIN_SEGMENT).min(p.text.len());
        let chunk = p.text[p.sent..end].to_vec();
        p.sent = end;
        if end < p.text.len() {
            h.cont = true;
            h.csg = p.last.csg;
            self.pending_out = Some(p);
            return LoginStep::Respond(h, chunk);
        }
        let mut last = p.last;
        if last.transit {
            self.stage = last.nsg;
        }
        last.stat_sn = h.stat_sn;
        last.exp_cmd_sn = h.exp_cmd_sn;
        last.max_cmd_sn = h.max_cmd_sn;
        if let Some(o) = p.outcome.as_mut() {
            o.next_stat_sn = self.stat_sn;
        }
        finish(last, chunk, p.outcome)
    }

    fn identify(&mut self, env: &dyn LoginEnv) -> Result<(), LoginError> {
        let p = &self.neg.params;
        if p.initiator_name.is_empty() {
            return Err(LoginError::Missing("InitiatorName"));
        }
        if p.session_type == SessionType::Normal {
            let Some(name) = &p.target_name else {
                return Err(LoginError::Missing("TargetName"));
            };
            if !name.eq_ignore_ascii_case(&self.settings.target_name) {
                return Err(LoginError::UnknownTarget(name.clone()));
            }
        }
        let listed = self.settings.may_access(&p.initiator_name);
        if (p.session_type == SessionType::Normal && !listed) || !env.allowed(&p.initiator_name) {
            return Err(LoginError::Forbidden(p.initiator_name.clone()));
        }
        // A draining target sends new sessions elsewhere (discovery sessions are
        // answered, with the peers' portals). Only initiators the ACL lets in learn
        // where the peers are.
        if p.session_type == SessionType::Normal {
            match env.redirect() {
                Some(Redirect::To(addr)) => return Err(LoginError::Redirected(addr)),
                Some(Redirect::Unavailable) => return Err(LoginError::Unavailable),
                None => {}
            }
        }
        self.identified = true;
        Ok(())
    }

    fn complete(
        &mut self,
        req: &LoginRequest,
        env: &dyn LoginEnv,
    ) -> Result<Box<LoginOutcome>, LoginError> {
        let p = &self.neg.params;
        env.admit(&p.initiator_name, req.isid, p.session_type)?;
        let tsih = if req.tsih == 0 {
            env.new_tsih()
        } else if env.session_exists(req.tsih) {
            return Err(LoginError::TooManyConnections(req.tsih));
        } else {
            return Err(LoginError::NoSession(req.tsih));
        };
        Ok(Box::new(LoginOutcome {
            params: self.neg.params.clone(),
            isid: req.isid,
            tsih,
            cid: req.cid,
            exp_cmd_sn: req.cmd_sn,
            next_stat_sn: self.stat_sn,
            target_visible: self.settings.may_access(&self.neg.params.initiator_name),
        }))
    }
}

fn finish(last: LoginResponse, text: Vec<u8>, outcome: Option<Box<LoginOutcome>>) -> LoginStep {
    match outcome {
        Some(o) => LoginStep::Complete(last, text, o),
        None => LoginStep::Respond(last, text),
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
