//! Full feature phase of one connection: CmdSN window and ordering, StatSN, SCSI
//! command execution with Data-In generation, write draining, NOP-In/Out, Text,
//! task management and logout. Everything it keeps for the initiator is bounded: a
//! count of tasks, a cap on immediate commands (which bypass the CmdSN window) and
//! a byte budget for what it buffers.

mod scsi;
mod task_mgmt;
mod text_exchange;
mod timers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::budget::{self, SessionBudget, TargetBudget};
use super::outbox::{Outbox, ReadRequest};
use super::seq;
use super::task::{Collect, Held, Residual, State, Task};
use crate::login::{LoginOutcome, SessionParams, SessionType};
use crate::lun_table::LunTable;
use crate::pdu::{
    AsyncMessage, DataIn, Header, LogoutResponse, NopIn, Pdu, R2t, Reject, RejectReason,
    ScsiCommand, ScsiResponse, ScsiStatus, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfFunction, TmfResponse, RESERVED_TAG,
};
use crate::scsi::cdb::op;
use crate::scsi::exec::bypasses_unit_attention;
use crate::scsi::logical_unit::decode_lun;
use crate::scsi::reservation;
use crate::scsi::{execute, ExecCtx, Outcome, Sense};
use crate::scsi::{AccessState, TargetPort};
use text_exchange::TextExchange;

/// AsyncEvent 1: the target requests a logout.
const ASYNC_EVENT_LOGOUT_REQUEST: u8 = 1;

#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Commands the initiator may have outstanding (MaxCmdSN - ExpCmdSN + 1).
    pub cmd_window: u32,
    /// Send GOOD status in the last Data-In instead of a separate SCSI Response.
    pub phase_collapse: bool,
    /// Ping an idle connection with NOP-In after this long; `None` disables.
    pub nop_interval: Option<Duration>,
    /// Close the connection when a NOP-In ping is not answered within this.
    pub nop_timeout: Duration,
    pub max_text_bytes: usize,
    pub max_keys: usize,
    /// A connection that has not completed login by then is closed.
    pub login_timeout: Duration,
    /// Close a normal / discovery session after this long without a command.
    pub idle_timeout: Option<Duration>,
    pub discovery_idle_timeout: Option<Duration>,
    /// A connection whose writes make no progress this long is closed (enforced by
    /// the I/O layer; here so every connection setting lives in one place).
    pub write_timeout: Duration,
    /// Bytes one session may buffer for its initiator (see [`super::budget`]).
    pub session_buffer_bytes: usize,
    /// What every session of the target draws from together.
    pub target_budget: Arc<TargetBudget>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            cmd_window: 128,
            phase_collapse: true,
            nop_interval: Some(Duration::from_secs(5)),
            nop_timeout: Duration::from_secs(15),
            max_text_bytes: 64 * 1024,
            max_keys: 256,
            login_timeout: Duration::from_secs(15),
            idle_timeout: None,
            discovery_idle_timeout: Some(Duration::from_secs(60)),
            write_timeout: Duration::from_secs(30),
            session_buffer_bytes: budget::DEFAULT_SESSION_BYTES,
            target_budget: Arc::new(TargetBudget::default()),
        }
    }
}

/// Immediate SCSI commands a session may have outstanding: they bypass the CmdSN
/// window, so this is their window (beyond it: Reject, "too many immediate commands").
pub const MAX_IMMEDIATE_TASKS: usize = 16;

#[derive(Debug)]
pub struct FullFeature {
    settings: Arc<SessionSettings>,
    pub params: SessionParams,
    pub tsih: u16,
    /// This session's I_T nexus, `initiator,i,0xISID`, for reservations.
    nexus: String,
    stat_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    luns: Arc<LunTable>,
    port: Arc<TargetPort>,
    portals: Arc<Vec<String>>,
    /// Every accepted command not yet answered, by ITT.
    tasks: HashMap<u32, Task>,
    held: BTreeMap<u32, Held>,
    ua: HashMap<u64, VecDeque<Sense>>,
    /// The target port group's ALUA state as this session last heard it.
    access: AccessState,
    text: Option<TextExchange>,
    budget: SessionBudget,
    ping: Option<(u32, Instant)>,
    next_ttt: u32,
    last_rx: Instant,
    target_visible: bool,
    /// When the last PDU other than a NOP-Out arrived (for the idle timeout).
    last_work: Instant,
}

impl FullFeature {
    /// The session a completed login opens.
    pub fn new(
        settings: Arc<SessionSettings>,
        login: &LoginOutcome,
        luns: Arc<LunTable>,
        port: Arc<TargetPort>,
        portals: Arc<Vec<String>>,
        now: Instant,
    ) -> FullFeature {
        let params = login.params.clone();
        let (tsih, isid) = (login.tsih, login.isid);
        let (exp_cmd_sn, stat_sn) = (login.exp_cmd_sn, login.next_stat_sn);
        let window = settings.cmd_window.max(1);
        let ua = luns
            .numbers()
            .iter()
            .map(|&l| (l, VecDeque::from([Sense::POWER_ON_RESET])))
            .collect();
        let nexus = format!(
            "{},i,0x{}",
            params.initiator_name.to_ascii_lowercase(),
            hex::encode(isid)
        );
        let budget = SessionBudget::new(
            settings.session_buffer_bytes,
            Arc::clone(&settings.target_budget),
        );
        FullFeature {
            settings,
            params,
            tsih,
            nexus,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(window - 1),
            luns,
            port,
            portals,
            tasks: HashMap::new(),
            held: BTreeMap::new(),
            ua,
            access: AccessState::default(),
            text: None,
            budget,
            ping: None,
            next_ttt: 1,
            last_rx: now,
            last_work: now,
            target_visible: login.target_visible,
        }
    }

    /// Publish a new LUN table. A LUN whose content changed under its number (a new
    /// version of the image, or another image) reports MEDIUM MAY HAVE CHANGED before
    /// any read of the new bytes; when the set of numbers changed, every LUN reports
    /// REPORTED LUNS DATA HAS CHANGED (a LUN that went too, once); a new LUN reports
    /// a power-on.
    pub fn set_luns(&mut self, luns: Arc<LunTable>) {
        // A LUN that went keeps one attention, so an initiator still addressing it
        // hears the inventory changed before LOGICAL UNIT NOT SUPPORTED.
        self.ua.retain(|l, _| luns.get(*l).is_some());
        for &gone in self.luns.numbers() {
            if luns.get(gone).is_none() {
                self.ua
                    .insert(gone, VecDeque::from([Sense::REPORTED_LUNS_CHANGED]));
            }
        }
        let inventory_changed = self.luns.numbers() != luns.numbers();
        for new in luns.iter() {
            let l = new.info.lun;
            let mut raise = Vec::with_capacity(2);
            match self.luns.get(l) {
                None => raise.push(Sense::POWER_ON_RESET),
                Some(old) if Arc::ptr_eq(old, new) => {}
                Some(old)
                    if old.version != new.version
                        || old.info.identity.source != new.info.identity.source
                        || old.info.size_bytes != new.info.size_bytes =>
                {
                    raise.push(Sense::MEDIUM_MAY_HAVE_CHANGED)
                }
                // Same image, other settings (reservations): a change all the same.
                Some(_) => raise.push(Sense::REPORTED_LUNS_CHANGED),
            }
            if inventory_changed && self.luns.get(l).is_some() {
                raise.push(Sense::REPORTED_LUNS_CHANGED);
            }
            let q = self.ua.entry(l).or_default();
            for sense in raise {
                if !q.contains(&sense) {
                    q.push_back(sense);
                }
            }
        }
        self.luns = luns;
    }

    /// Start in `access` (the state the target was in at login), without an attention.
    pub fn with_access(mut self, access: AccessState) -> FullFeature {
        self.access = access;
        self
    }

    /// The port group moved to another ALUA state: every LUN of this I_T nexus
    /// reports ASYMMETRIC ACCESS STATE CHANGED once.
    pub fn set_access_state(&mut self, access: AccessState) {
        if access == self.access {
            return;
        }
        self.access = access;
        for &l in self.luns.numbers() {
            let q = self.ua.entry(l).or_default();
            if !q.contains(&Sense::ASYMMETRIC_ACCESS_STATE_CHANGED) {
                q.push_back(Sense::ASYMMETRIC_ACCESS_STATE_CHANGED);
            }
        }
    }

    /// Ask the initiator to log out within `within_secs` (Asynchronous Message,
    /// AsyncEvent 1: the target is going away; RFC 7143 section 11.9.1).
    pub fn request_logout(&mut self, within_secs: u16, out: &mut Outbox) {
        let stat_sn = self.next_stat_sn();
        let max_cmd_sn = self.max_cmd_sn();
        let h = AsyncMessage {
            lun: 0,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn,
            event: ASYNC_EVENT_LOGOUT_REQUEST,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3: within_secs,
        };
        out.push(&Header::AsyncMessage(h), Bytes::new());
    }

    pub fn luns(&self) -> &Arc<LunTable> {
        &self.luns
    }

    pub fn outstanding(&self) -> usize {
        self.tasks.len()
    }

    /// Bytes buffered for the initiator, counted from the structures themselves;
    /// always equal to what the budget was charged (checked by the unit tests and,
    /// after every PDU, by the `session` fuzz target).
    pub fn buffered_bytes(&self) -> usize {
        self.tasks.values().map(|t| t.charge).sum::<usize>()
            + self.held.values().map(Held::bytes).sum::<usize>()
            + self.text.as_ref().map_or(0, TextExchange::bytes)
    }

    /// (charged, limit) of this session's budget.
    pub fn budget(&self) -> (usize, usize) {
        (self.budget.used(), self.budget.limit())
    }

    /// The most tasks one session may have: the CmdSN window plus the same again
    /// for commands answered late (reads waiting on S3) and immediate ones.
    fn max_tasks(&self) -> usize {
        2 * self.settings.cmd_window.max(1) as usize
    }

    fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = s.wrapping_add(1);
        s
    }

    /// MaxCmdSN shrinks the window by the commands still running, but never moves
    /// backwards (initiators ignore a decrease).
    fn max_cmd_sn(&mut self) -> u32 {
        let busy = (self.tasks.len() + self.held.len()) as u32;
        let room = self.settings.cmd_window.saturating_sub(busy).max(1);
        let candidate = self.exp_cmd_sn.wrapping_add(room - 1);
        if seq::lt(self.max_cmd_sn, candidate) {
            self.max_cmd_sn = candidate;
        }
        self.max_cmd_sn
    }

    fn fresh_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        t
    }

    pub fn reject(&mut self, raw_bhs: &[u8; 48], reason: RejectReason, out: &mut Outbox) {
        let h = Header::Reject(Reject {
            reason,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data_sn: 0,
        });
        out.push(&h, Bytes::copy_from_slice(raw_bhs));
    }

    /// Admit a PDU under the CmdSN rules: returns it when it is to be processed now.
    /// PDUs ahead of ExpCmdSN but inside the window wait in `held` (copied, so they
    /// pin no receive buffer, and charged to the budget); others are dropped.
    fn admit(&mut self, immediate: bool, cmd_sn: u32, pdu: Held, out: &mut Outbox) -> Option<Held> {
        if immediate {
            return Some(pdu);
        }
        if cmd_sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            return Some(pdu);
        }
        let in_window = seq::lt(self.exp_cmd_sn, cmd_sn) && seq::le(cmd_sn, self.max_cmd_sn);
        if !in_window || self.held.contains_key(&cmd_sn) {
            debug!(
                cmd_sn,
                exp = self.exp_cmd_sn,
                max = self.max_cmd_sn,
                "CmdSN outside the window or already received: dropped"
            );
            return None;
        }
        let pdu = match pdu {
            Held::Pdu(p) => Held::Pdu(detached(p)),
            Held::DataLost(p) => Held::DataLost(detached(p)),
            Held::Aborted => Held::Aborted,
        };
        if !self.budget.try_charge(pdu.bytes()) {
            warn!(
                cmd_sn,
                held = self.held.len(),
                "commands held for a CmdSN gap exceed the buffer budget"
            );
            out.abort("commands held for a CmdSN gap exceed the buffer budget");
            return None;
        }
        debug!(
            cmd_sn,
            exp = self.exp_cmd_sn,
            "holding command until the gap fills"
        );
        self.held.insert(cmd_sn, pdu);
        None
    }

    pub fn handle(&mut self, pdu: Pdu, now: Instant, out: &mut Outbox) {
        self.arrived(&pdu, now);
        self.dispatch(Held::Pdu(pdu), out);
        self.run_held(out);
    }

    /// A PDU whose header is sound but whose data segment failed its digest
    /// (RFC 7143 section 7.8): Reject it; a SCSI command is still a command (its
    /// CmdSN is consumed and it is answered), a Data-Out marks its task failed.
    pub fn data_digest_failed(&mut self, pdu: Pdu, now: Instant, out: &mut Outbox) {
        self.arrived(&pdu, now);
        self.reject(&pdu.raw_bhs, RejectReason::DataDigestError, out);
        match &pdu.header {
            Header::ScsiCommand(_) => self.dispatch(Held::DataLost(pdu), out),
            Header::DataOut(h) => {
                let h = h.clone();
                self.data_out(&h, &[], true, out);
            }
            // Other PDUs are discarded; the initiator retries or times them out.
            _ => {}
        }
        self.run_held(out);
    }

    fn arrived(&mut self, pdu: &Pdu, now: Instant) {
        self.last_rx = now;
        if !matches!(pdu.header, Header::NopOut(_)) {
            self.last_work = now;
        }
    }

    /// Commands that arrived early run once ExpCmdSN reaches them.
    fn run_held(&mut self, out: &mut Outbox) {
        while let Some(h) = self.held.remove(&self.exp_cmd_sn) {
            self.budget.release(h.bytes());
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            if !matches!(h, Held::Aborted) {
                self.process(h, out);
            }
        }
    }

    fn dispatch(&mut self, pdu: Held, out: &mut Outbox) {
        let sequenced = match pdu.pdu().map(|p| &p.header) {
            Some(Header::NopOut(h)) if h.itt != RESERVED_TAG => Some((h.immediate, h.cmd_sn)),
            Some(Header::ScsiCommand(h)) => Some((h.immediate, h.cmd_sn)),
            Some(Header::TaskMgmtRequest(h)) => Some((h.immediate, h.cmd_sn)),
            Some(Header::TextRequest(h)) => Some((h.immediate, h.cmd_sn)),
            Some(Header::LogoutRequest(h)) => Some((h.immediate, h.cmd_sn)),
            _ => None,
        };
        let pdu = match sequenced {
            Some((imm, sn)) => match self.admit(imm, sn, pdu, out) {
                Some(p) => p,
                None => return,
            },
            None => pdu,
        };
        self.process(pdu, out);
    }

    fn process(&mut self, held: Held, out: &mut Outbox) {
        let (pdu, data_lost) = match held {
            Held::Pdu(p) => (p, false),
            Held::DataLost(p) => (p, true),
            Held::Aborted => return,
        };
        let discovery = self.params.session_type == SessionType::Discovery;
        match &pdu.header {
            Header::NopOut(h) => {
                if h.itt == RESERVED_TAG {
                    // Our ping answered (or a ping that wants no answer).
                    if self.ping.is_some_and(|(ttt, _)| ttt == h.ttt) {
                        self.ping = None;
                    }
                    return;
                }
                let mut data = pdu.data.clone();
                data.truncate(self.params.initiator_max_recv_data_segment as usize);
                let h = Header::NopIn(NopIn {
                    lun: h.lun,
                    itt: h.itt,
                    ttt: RESERVED_TAG,
                    stat_sn: self.next_stat_sn(),
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                });
                out.push(&h, data);
            }
            Header::ScsiCommand(h) if !discovery => {
                let h = h.clone();
                self.scsi(&h, &pdu.raw_bhs, &pdu.data, data_lost, out)
            }
            Header::DataOut(h) if !discovery => {
                let h = h.clone();
                self.data_out(&h, &pdu.data, false, out)
            }
            Header::TaskMgmtRequest(h) if !discovery => {
                let h = h.clone();
                self.task_mgmt(&h, out)
            }
            Header::TextRequest(h) => {
                let h = h.clone();
                self.text(&h, &pdu, out)
            }
            Header::LogoutRequest(h) => {
                let resp = match h.reason {
                    0 | 1 => 0,
                    // Removing a connection for recovery needs ERL 2.
                    _ => 2,
                };
                self.drop_tasks(|_| true);
                let lh = Header::LogoutResponse(LogoutResponse {
                    response: resp,
                    itt: h.itt,
                    stat_sn: self.next_stat_sn(),
                    exp_cmd_sn: self.exp_cmd_sn,
                    max_cmd_sn: self.max_cmd_sn(),
                    time2wait: 0,
                    time2retain: 0,
                });
                out.push(&lh, Bytes::new());
                out.close("logout");
            }
            Header::SnackRequest(_) => self.reject(&pdu.raw_bhs, RejectReason::SnackReject, out),
            // Discovery sessions carry only Text, NOP and Logout; login PDUs and
            // target opcodes have no place here.
            _ => self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out),
        }
    }

    /// The I_T nexus is gone: drop the reservations it held.
    pub fn end(&mut self) {
        for l in self.luns.iter() {
            reservation::release_if_held(&mut l.state(), &self.nexus);
        }
    }
}

/// A copy of `p` that owns its bytes: a held PDU must not pin the receive buffer
/// it was cut from (its budget charge would then understate what it keeps alive).
fn detached(p: Pdu) -> Pdu {
    Pdu {
        ahs: Bytes::copy_from_slice(&p.ahs),
        data: Bytes::copy_from_slice(&p.data),
        ..p
    }
}
