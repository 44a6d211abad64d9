//! Task management (RFC 7143 section 11.5): aborts of running and held tasks,
//! task set and LU resets (which also drop reservations), and target resets.

use super::*;

impl FullFeature {
    pub(super) fn task_mgmt(&mut self, h: &TaskMgmtRequest, out: &mut Outbox) {
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
    pub(super) fn abort_task(&mut self, h: &TaskMgmtRequest) -> TmfResponse {
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

    /// Remove the tasks `which` selects, giving their budget back.
    pub(super) fn drop_tasks(&mut self, which: impl Fn(&Task) -> bool) {
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
    pub(super) fn abort_held(&mut self, which: impl Fn(&Held) -> bool) {
        let mut freed = 0;
        for h in self.held.values_mut() {
            if which(h) {
                freed += h.bytes();
                *h = Held::Aborted;
            }
        }
        self.budget.release(freed);
    }
}
