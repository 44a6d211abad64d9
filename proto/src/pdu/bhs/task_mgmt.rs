//! Task Management Function Request and Response (RFC 7143 sections 11.5 and 11.6).
//! Each header's parse and encode sit side by side.

use super::{bit, flag, put32, put64, u32_at, u64_at, Bhs, F};
use crate::pdu::{Opcode, TmfFunction, TmfResponse, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TmfFunction,
    pub lun: u64,
    pub itt: u32,
    pub ref_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

impl Bhs for TaskMgmtRequest {
    const OPCODE: Opcode = Opcode::TaskMgmtRequest;

    fn parse(b: &[u8; BHS_LEN]) -> TaskMgmtRequest {
        let imm = bit(b[0], 0x40);
        let f1 = b[1];
        TaskMgmtRequest {
            immediate: imm,
            function: (f1 & 0x7f).into(),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ref_task_tag: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
            ref_cmd_sn: u32_at(b, 32),
            exp_data_sn: u32_at(b, 36),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[0] |= flag(h.immediate, 0x40);
        b[1] = F | (u8::from(h.function) & 0x7f);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ref_task_tag);
        put32(b, 24, h.cmd_sn);
        put32(b, 28, h.exp_stat_sn);
        put32(b, 32, h.ref_cmd_sn);
        put32(b, 36, h.exp_data_sn);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: TmfResponse,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl Bhs for TaskMgmtResponse {
    const OPCODE: Opcode = Opcode::TaskMgmtResponse;

    fn parse(b: &[u8; BHS_LEN]) -> TaskMgmtResponse {
        TaskMgmtResponse {
            response: b[2].into(),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F;
        b[2] = h.response.into();
        put32(b, 16, h.itt);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
    }
}
