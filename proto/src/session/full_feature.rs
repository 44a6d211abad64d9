//! Full feature phase of one connection: CmdSN window and ordering, StatSN, SCSI
//! command execution with Data-In generation, write draining, NOP-In/Out, Text,
//! task management and logout. Everything it keeps for the initiator is bounded: a
//! count of tasks, a cap on immediate commands (which bypass the CmdSN window) and
//! a byte budget for what it buffers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::budget::{self, SessionBudget, TargetBudget};
use super::outbox::{Outbox, ReadRequest};
use super::seq;
use super::task::{Collect, Held, Residual, State, Task};
use super::text_exchange::{self, Discovery, PendingText, TextExchange};
use crate::login::{LoginOutcome, SessionParams, SessionType};
use crate::lun_table::LunTable;
use crate::pdu::{
    DataIn, Header, LogoutResponse, NopIn, Pdu, R2t, Reject, RejectReason, ScsiCommand,
    ScsiResponse, ScsiStatus, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse,
    TmfFunction, TmfResponse, RESERVED_TAG,
};
use crate::scsi::cdb::op;
use crate::scsi::exec::{bypasses_unit_attention, TargetPort};
use crate::scsi::logical_unit::decode_lun;
use crate::scsi::reservation;
use crate::scsi::{execute, ExecCtx, Outcome, Sense};

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
            text: None,
            budget,
            ping: None,
            next_ttt: 1,
            last_rx: now,
            last_work: now,
            target_visible: login.target_visible,
        }
    }

    /// Publish a new LUN table: existing LUNs get REPORTED LUNS DATA HAS CHANGED,
    /// new ones a power-on unit attention.
    pub fn set_luns(&mut self, luns: Arc<LunTable>) {
        self.ua.retain(|l, _| luns.get(*l).is_some());
        for &l in luns.numbers() {
            let sense = if self.luns.get(l).is_some() {
                Sense::REPORTED_LUNS_CHANGED
            } else {
                Sense::POWER_ON_RESET
            };
            let q = self.ua.entry(l).or_default();
            if !q.contains(&sense) {
                q.push_back(sense);
            }
        }
        self.luns = luns;
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

    /// Remove the tasks `which` selects, giving their budget back.
    fn drop_tasks(&mut self, which: impl Fn(&Task) -> bool) {
        let mut freed = 0;
        self.tasks.retain(|_, t| {
            let drop = which(t);
            if drop {
                freed += t.charge;
            }
            !drop
        });
        self.budget.release(freed);
    }

    /// Held commands `which` selects become aborted placeholders: they will not
    /// run, but their CmdSNs still count as received.
    fn abort_held(&mut self, which: impl Fn(&Held) -> bool) {
        let mut freed = 0;
        for h in self.held.values_mut() {
            if which(h) {
                freed += h.bytes();
                *h = Held::Aborted;
            }
        }
        self.budget.release(freed);
    }

    fn scsi(
        &mut self,
        cmd: &ScsiCommand,
        raw: &[u8; 48],
        immediate: &Bytes,
        data_lost: bool,
        out: &mut Outbox,
    ) {
        if self.tasks.contains_key(&cmd.itt) {
            self.reject(raw, RejectReason::TaskInProgress, out);
            return;
        }
        let lun = decode_lun(cmd.lun);
        let unsolicited_follows = cmd.write && !cmd.final_;
        // Bounds first: a command refused here costs nothing but its answer.
        if cmd.immediate
            && self.tasks.values().filter(|t| t.immediate).count() >= MAX_IMMEDIATE_TASKS
        {
            self.reject(raw, RejectReason::ImmediateCommandReject, out);
            return;
        }
        if self.tasks.len() >= self.max_tasks() {
            self.task_set_full(cmd.itt, out);
            return;
        }
        let outcome = if data_lost {
            // The command's data is gone; the command itself is answered.
            Outcome::Check(Sense::PROTOCOL_SERVICE_CRC_ERROR)
        } else {
            self.execute(lun, &cmd.cdb)
        };
        let new_task = |charge, state| Task {
            lun,
            edtl: cmd.expected_len,
            immediate: cmd.immediate,
            charge,
            state,
        };
        if let Outcome::Compare {
            offset,
            len,
            pattern,
        } = outcome
        {
            let block = self
                .luns
                .get(lun)
                .map_or(512, |l| l.info.block_size as usize);
            let want = if pattern { block } else { len as usize };
            let want = want.min(cmd.expected_len as usize);
            if !self.budget.try_charge(want) {
                debug!(itt = cmd.itt, want, "VERIFY buffer over the budget");
                self.task_set_full(cmd.itt, out);
                return;
            }
            let mut buf = vec![0u8; want];
            let n = immediate.len().min(want);
            buf[..n].copy_from_slice(&immediate[..n]);
            let c = Collect {
                buf,
                received: n,
                offset,
                len,
                pattern,
                r2t_sn: 0,
                crc_failed: false,
            };
            self.tasks
                .insert(cmd.itt, new_task(want, State::Collecting(c)));
            if cmd.final_ {
                self.continue_collect(cmd.itt, out);
            }
            return;
        }
        if unsolicited_follows {
            self.tasks
                .insert(cmd.itt, new_task(0, State::Draining(outcome)));
            return;
        }
        if !immediate.is_empty() && !cmd.write {
            debug!(
                itt = cmd.itt,
                "immediate data on a command that sends none: ignored"
            );
        }
        if let Outcome::Read { offset, len } = outcome {
            self.tasks
                .insert(cmd.itt, new_task(0, State::Reading { compare: None }));
            out.read(ReadRequest {
                itt: cmd.itt,
                lun,
                offset,
                len,
            });
            return;
        }
        self.finish(cmd.itt, lun, cmd.expected_len, outcome, out);
    }

    fn data_out(&mut self, h: &crate::pdu::DataOut, data: &[u8], lost: bool, out: &mut Outbox) {
        let Some(task) = self.tasks.get_mut(&h.itt) else {
            debug!(itt = h.itt, "Data-Out for no task: ignored");
            return;
        };
        match &mut task.state {
            State::Collecting(c) => {
                let off = h.buffer_offset as usize;
                let end = off.saturating_add(data.len());
                if lost {
                    c.crc_failed = true;
                } else if end <= c.buf.len() {
                    c.buf[off..end].copy_from_slice(data);
                    c.received = c.received.max(end);
                } else {
                    warn!(
                        itt = h.itt,
                        off,
                        len = data.len(),
                        "Data-Out beyond the expected length"
                    );
                }
                if h.final_ {
                    self.continue_collect(h.itt, out);
                }
            }
            State::Draining(_) if h.final_ => {
                if let Some(t) = self.tasks.remove(&h.itt) {
                    self.budget.release(t.charge);
                    if let State::Draining(outcome) = t.state {
                        debug!(itt = h.itt, "unsolicited data drained");
                        self.finish(h.itt, t.lun, 0, outcome, out);
                    }
                }
            }
            State::Draining(_) => {}
            State::Reading { .. } => debug!(itt = h.itt, "Data-Out for a task not expecting any"),
        }
    }

    /// Ask for the next burst of a VERIFY's data, or compare once all of it is here.
    fn continue_collect(&mut self, itt: u32, out: &mut Outbox) {
        let Some(Task {
            lun,
            state: State::Collecting(c),
            ..
        }) = self.tasks.get_mut(&itt)
        else {
            return;
        };
        let lun = *lun;
        if c.crc_failed {
            // ErrorRecoveryLevel 0: no recovery R2T; the task ends here.
            if let Some(t) = self.tasks.remove(&itt) {
                self.budget.release(t.charge);
            }
            let s = Sense::PROTOCOL_SERVICE_CRC_ERROR;
            self.check(itt, s, out);
            return;
        }
        if c.received < c.buf.len() {
            let desired = (c.buf.len() - c.received).min(self.params.max_burst as usize);
            let r2t_sn = c.r2t_sn;
            c.r2t_sn += 1;
            let buffer_offset = c.received as u32;
            let ttt = self.fresh_ttt();
            let h = Header::R2t(R2t {
                lun: crate::scsi::logical_unit::encode_lun(lun),
                itt,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                r2t_sn,
                buffer_offset,
                desired_len: desired as u32,
            });
            out.push(&h, Bytes::new());
            return;
        }
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let State::Collecting(c) =
            std::mem::replace(&mut task.state, State::Reading { compare: None })
        else {
            return;
        };
        task.state = State::Reading {
            compare: Some((c.buf, c.pattern)),
        };
        task.edtl = 0;
        out.read(ReadRequest {
            itt,
            lun: task.lun,
            offset: c.offset,
            len: c.len,
        });
    }

    fn execute(&mut self, lun: u64, cdb: &[u8; 16]) -> Outcome {
        let luns = Arc::clone(&self.luns);
        if let Some(l) = luns.get(lun) {
            // Where reservations are off (the default for shared images) nothing is
            // ever reserved, and RESERVE/RELEASE fall through as unsupported.
            if l.info.reservations {
                if let Some(o) = reservation::apply(&mut l.state(), &self.nexus, cdb) {
                    return o;
                }
            }
        }
        let lu = luns.get(lun).map(|l| &l.info);
        if lu.is_some() {
            if let Some(q) = self.ua.get_mut(&lun) {
                if let Some(ua) = q.front().copied() {
                    if cdb[0] == op::REQUEST_SENSE {
                        q.pop_front();
                        let alloc = cdb[4] as usize;
                        let mut d = ua.fixed().to_vec();
                        d.truncate(alloc);
                        return Outcome::Data(d);
                    }
                    if !bypasses_unit_attention(cdb) {
                        q.pop_front();
                        return Outcome::Check(ua);
                    }
                }
            }
        }
        execute(
            cdb,
            &ExecCtx {
                lu,
                luns: luns.numbers(),
                port: &self.port,
            },
        )
    }

    fn finish(&mut self, itt: u32, lun: u64, edtl: u32, outcome: Outcome, out: &mut Outbox) {
        match outcome {
            Outcome::Data(d) => self.data_in(itt, lun, Bytes::from(d), edtl, out),
            Outcome::Good => self.status(itt, ScsiStatus::Good, None, Residual::of(edtl, 0), out),
            Outcome::Conflict => self.status(
                itt,
                ScsiStatus::ReservationConflict,
                None,
                Residual::default(),
                out,
            ),
            Outcome::Check(s) => self.check(itt, s, out),
            Outcome::Read { .. } | Outcome::Compare { .. } => {
                // Issued by `scsi`; one reaching here had its data drained.
                self.status(itt, ScsiStatus::Good, None, Residual::default(), out)
            }
        }
    }

    /// The image bytes of a READ arrived (or failed).
    pub fn read_done(&mut self, itt: u32, result: Result<Bytes, Sense>, out: &mut Outbox) {
        let Some(task) = self.tasks.remove(&itt) else {
            // Aborted meanwhile: under ERL 0 an aborted task gets no response.
            return;
        };
        self.budget.release(task.charge);
        let compare = match task.state {
            State::Reading { compare } => compare,
            // Not waiting for the store (the ITT was reused after an abort).
            other => {
                self.tasks.insert(
                    itt,
                    Task {
                        state: other,
                        ..task
                    },
                );
                return;
            }
        };
        match result {
            Ok(data) => match compare {
                Some((expected, pattern)) => {
                    let same = if pattern {
                        data.chunks(expected.len().max(1))
                            .all(|b| b == &expected[..])
                    } else {
                        data[..] == expected[..]
                    };
                    if same {
                        self.status(itt, ScsiStatus::Good, None, Residual::default(), out)
                    } else {
                        let s = Sense::MISCOMPARE_DURING_VERIFY;
                        self.check(itt, s, out)
                    }
                }
                None => self.data_in(itt, task.lun, data, task.edtl, out),
            },
            Err(sense) => self.check(itt, sense, out),
        }
    }

    /// SAM's answer to a command the task set has no room (or no budget) for.
    fn task_set_full(&mut self, itt: u32, out: &mut Outbox) {
        debug!(itt, "task set full");
        self.status(itt, ScsiStatus::TaskSetFull, None, Residual::default(), out)
    }

    fn check(&mut self, itt: u32, sense: Sense, out: &mut Outbox) {
        self.status(
            itt,
            ScsiStatus::CheckCondition,
            Some(sense),
            Residual::default(),
            out,
        )
    }

    fn status(
        &mut self,
        itt: u32,
        st: ScsiStatus,
        sense: Option<Sense>,
        r: Residual,
        out: &mut Outbox,
    ) {
        let h = Header::ScsiResponse(ScsiResponse {
            overflow: r.overflow,
            underflow: r.underflow,
            residual: r.count,
            response: 0,
            status: st,
            itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            ..ScsiResponse::default()
        });
        let data = sense.map_or_else(Bytes::new, |s| Bytes::from(s.response_segment()));
        out.push(&h, data);
    }
    /// Data-In PDUs for `data`, cut to the expected length, split by the initiator's
    /// MaxRecvDataSegmentLength, F bit at each MaxBurstLength sequence end, and GOOD
    /// status in the last PDU when phase collapse is on.
    fn data_in(&mut self, itt: u32, _lun: u64, data: Bytes, edtl: u32, out: &mut Outbox) {
        let residual = Residual::of(edtl, data.len() as u64);
        let n = data.len().min(edtl as usize);
        if n == 0 {
            self.status(itt, ScsiStatus::Good, None, residual, out);
            return;
        }
        let seg = self.params.initiator_max_recv_data_segment.max(512) as usize;
        let burst = self.params.max_burst.max(512) as usize;
        let collapse = self.settings.phase_collapse;
        let mut offset = 0usize;
        let mut data_sn = 0u32;
        let mut in_burst = 0usize;
        while offset < n {
            let len = seg.min(n - offset).min(burst - in_burst);
            let last = offset + len == n;
            in_burst += len;
            let end_of_burst = last || in_burst == burst;
            if end_of_burst {
                in_burst = 0;
            }
            let with_status = last && collapse;
            let h = Header::DataIn(DataIn {
                final_: end_of_burst,
                ack: false,
                overflow: with_status && residual.overflow,
                underflow: with_status && residual.underflow,
                status: with_status.then_some(ScsiStatus::Good),
                lun: 0,
                itt,
                ttt: RESERVED_TAG,
                stat_sn: if with_status {
                    self.next_stat_sn()
                } else {
                    self.stat_sn
                },
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data_sn,
                buffer_offset: offset as u32,
                residual: if with_status { residual.count } else { 0 },
            });
            out.push(&h, data.slice(offset..offset + len));
            offset += len;
            data_sn = data_sn.wrapping_add(1);
        }
        if !collapse {
            self.status(itt, ScsiStatus::Good, None, residual, out);
        }
    }

    fn task_mgmt(&mut self, h: &TaskMgmtRequest, out: &mut Outbox) {
        let lun = decode_lun(h.lun);
        let lun_exists = self.luns.get(lun).is_some();
        let resp = match h.function {
            TmfFunction::AbortTask => self.abort_task(h),
            TmfFunction::AbortTaskSet
            | TmfFunction::ClearTaskSet
            | TmfFunction::LogicalUnitReset => {
                if !lun_exists {
                    TmfResponse::NoSuchLun
                } else {
                    self.drop_tasks(|t| t.lun == lun);
                    self.abort_held(|p| p.lun() == Some(lun));
                    if h.function == TmfFunction::LogicalUnitReset {
                        if let Some(l) = self.luns.get(lun) {
                            l.state().reserved_by = None;
                        }
                    }
                    TmfResponse::Complete
                }
            }
            TmfFunction::ClearAca => TmfResponse::Complete,
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                self.drop_tasks(|_| true);
                self.abort_held(|_| true);
                for l in self.luns.iter() {
                    l.state().reserved_by = None;
                }
                TmfResponse::Complete
            }
            TmfFunction::TaskReassign => TmfResponse::ReassignUnsupported,
            _ => TmfResponse::NotSupported,
        };
        info!(
            function = ?h.function,
            lun,
            response = ?resp,
            "task management"
        );
        let th = Header::TaskMgmtResponse(TaskMgmtResponse {
            response: resp,
            itt: h.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        });
        out.push(&th, Bytes::new());
        if h.function == TmfFunction::TargetColdReset {
            out.close("target cold reset");
        }
    }

    /// ABORT TASK, as RFC 7143 section 11.5.1 has it: a task that exists (running,
    /// or held for a CmdSN gap) is aborted; one never received whose RefCmdSN lies
    /// in the window before this request's CmdSN is taken as received and aborted,
    /// so the commands numbered after it still run.
    fn abort_task(&mut self, h: &TaskMgmtRequest) -> TmfResponse {
        let tag = h.ref_task_tag;
        if let Some(t) = self.tasks.remove(&tag) {
            self.budget.release(t.charge);
            return TmfResponse::Complete;
        }
        if self.held.values().any(|p| p.itt() == Some(tag)) {
            self.abort_held(|p| p.itt() == Some(tag));
            return TmfResponse::Complete;
        }
        let sn = h.ref_cmd_sn;
        let in_window = seq::le(self.exp_cmd_sn, sn) && seq::le(sn, self.max_cmd_sn);
        if !in_window || !seq::lt(sn, h.cmd_sn) {
            return TmfResponse::NoSuchTask;
        }
        if sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        } else {
            self.held.entry(sn).or_insert(Held::Aborted);
        }
        TmfResponse::Complete
    }

    fn text(&mut self, h: &TextRequest, pdu: &Pdu, out: &mut Outbox) {
        let exchange = self.text.take();
        if let Some(x) = &exchange {
            self.budget.release(x.bytes());
        }
        let exchange = exchange.filter(|x| x.continued_by(h.itt, h.ttt));
        if exchange.is_none() && h.ttt != RESERVED_TAG {
            // A continuation of nothing we know (or of an exchange since replaced).
            self.reject(&pdu.raw_bhs, RejectReason::InvalidPduField, out);
            return;
        }
        let mut req = match exchange {
            Some(TextExchange::Sending(p)) => {
                if !pdu.data.is_empty() {
                    self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out);
                    return;
                }
                self.send_text_chunk(p, out);
                return;
            }
            Some(TextExchange::Receiving { text, .. }) => text,
            // A new request: whatever was in progress is abandoned.
            None => Vec::new(),
        };
        let total = req.len() + pdu.data.len();
        if total > self.settings.max_text_bytes || !self.budget.try_charge(total) {
            self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out);
            return;
        }
        req.extend_from_slice(&pdu.data);
        if h.cont {
            let ttt = self.fresh_ttt();
            let th = Header::TextResponse(TextResponse {
                final_: false,
                cont: false,
                lun: h.lun,
                itt: h.itt,
                ttt,
                stat_sn: self.next_stat_sn(),
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
            });
            out.push(&th, Bytes::new());
            self.text = Some(TextExchange::Receiving {
                itt: h.itt,
                ttt,
                text: req,
            });
            return;
        }
        self.budget.release(total);
        let target_name = self.port.target_name.clone();
        let portals = Arc::clone(&self.portals);
        let disc = Discovery {
            session_type: self.params.session_type,
            target_name: &target_name,
            portals: &portals,
            visible: self.target_visible,
        };
        let mut mrdsl = self.params.initiator_max_recv_data_segment;
        match text_exchange::answer(&req, self.settings.max_keys, &disc, &mut mrdsl) {
            Ok(answer) => {
                self.params.initiator_max_recv_data_segment = mrdsl;
                let p = PendingText {
                    ttt: RESERVED_TAG,
                    itt: h.itt,
                    data: Bytes::from(answer),
                    sent: 0,
                };
                self.send_text_chunk(p, out);
            }
            Err(e) => {
                warn!(error = %e, "bad text request");
                self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out);
            }
        }
    }

    fn send_text_chunk(&mut self, mut p: PendingText, out: &mut Outbox) {
        let seg = self.params.initiator_max_recv_data_segment as usize;
        let end = (p.sent + seg).min(p.data.len());
        let chunk = p.data.slice(p.sent..end);
        p.sent = end;
        let more = end < p.data.len();
        let ttt = if more { self.fresh_ttt() } else { RESERVED_TAG };
        let th = Header::TextResponse(TextResponse {
            final_: !more,
            cont: more,
            lun: 0,
            itt: p.itt,
            ttt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        });
        out.push(&th, chunk);
        // Whatever is still to send stays charged until the initiator asks for it.
        if more && self.budget.try_charge(p.data.len()) {
            p.ttt = ttt;
            self.text = Some(TextExchange::Sending(p));
        }
    }

    /// The I_T nexus is gone: drop the reservations it held.
    pub fn end(&mut self) {
        for l in self.luns.iter() {
            reservation::release_if_held(&mut l.state(), &self.nexus);
        }
    }

    fn idle_limit(&self) -> Option<Duration> {
        match self.params.session_type {
            SessionType::Normal => self.settings.idle_timeout,
            SessionType::Discovery => self.settings.discovery_idle_timeout,
        }
    }

    /// When [`Self::handle_timeout`] has something to do: the idle limit (only with
    /// no command running), the deadline of an unanswered ping, or the next ping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self
            .idle_limit()
            .filter(|_| self.tasks.is_empty())
            .map(|l| self.last_work + l);
        let ping = match self.ping {
            Some((_, sent)) => Some(sent + self.settings.nop_timeout),
            None => self.settings.nop_interval.map(|i| self.last_rx + i),
        };
        match (idle, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers due at `now`: close an idle session, give up on a peer that does not
    /// answer its ping, or ping one that has gone quiet. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        if let Some(limit) = self.idle_limit() {
            let idle = now.saturating_duration_since(self.last_work);
            if idle >= limit && self.tasks.is_empty() {
                out.abort(format!("idle for {} s (idle timeout)", idle.as_secs()));
                return;
            }
        }
        if let Some((_, sent)) = self.ping {
            if now.saturating_duration_since(sent) >= self.settings.nop_timeout {
                out.abort("NOP-In ping not answered");
            }
            return;
        }
        let Some(interval) = self.settings.nop_interval else {
            return;
        };
        if now.saturating_duration_since(self.last_rx) >= interval {
            let ttt = self.fresh_ttt();
            self.ping = Some((ttt, now));
            let h = Header::NopIn(NopIn {
                lun: 0,
                itt: RESERVED_TAG,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
            });
            out.push(&h, Bytes::new());
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
