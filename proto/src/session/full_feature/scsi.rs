//! SCSI commands in a session: admission against the task bounds, execution with
//! the LUN's unit attentions and reservations, VERIFY data collected with R2Ts,
//! unsolicited data drained, image reads asked for and answered, Data-In split by
//! the initiator's segment and burst lengths, and SCSI Responses with residuals.

use super::*;

impl FullFeature {
    pub(super) fn scsi(
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

    pub(super) fn data_out(
        &mut self,
        h: &crate::pdu::DataOut,
        data: &[u8],
        lost: bool,
        out: &mut Outbox,
    ) {
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
    pub(super) fn continue_collect(&mut self, itt: u32, out: &mut Outbox) {
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

    pub(super) fn execute(&mut self, lun: u64, cdb: &[u8; 16]) -> Outcome {
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
        // Attentions first, even for a LUN that just went (see `set_luns`).
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
        // Then the port group's state: a standby or unavailable path refuses media
        // access so multipath moves I/O to another path.
        if lu.is_some() {
            if let Some(spec) = crate::scsi::commands::lookup(cdb) {
                if let Err(sense) = self.access.admit(spec.access) {
                    return Outcome::Check(sense);
                }
            }
        }
        execute(
            cdb,
            &ExecCtx {
                lu,
                luns: luns.numbers(),
                port: &self.port,
                access: self.access,
            },
        )
    }

    pub(super) fn finish(
        &mut self,
        itt: u32,
        lun: u64,
        edtl: u32,
        outcome: Outcome,
        out: &mut Outbox,
    ) {
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
    pub(super) fn task_set_full(&mut self, itt: u32, out: &mut Outbox) {
        debug!(itt, "task set full");
        self.status(itt, ScsiStatus::TaskSetFull, None, Residual::default(), out)
    }

    pub(super) fn check(&mut self, itt: u32, sense: Sense, out: &mut Outbox) {
        self.status(
            itt,
            ScsiStatus::CheckCondition,
            Some(sense),
            Residual::default(),
            out,
        )
    }

    pub(super) fn status(
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
    pub(super) fn data_in(
        &mut self,
        itt: u32,
        _lun: u64,
        data: Bytes,
        edtl: u32,
        out: &mut Outbox,
    ) {
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
}
