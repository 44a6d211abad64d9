//! Logout Request and Response (RFC 7143 sections 11.14 and 11.15).
//! Each header's parse and encode sit side by side.

use super::{bit, flag, put16, put32, u16_at, u32_at, Bhs, F};
use crate::pdu::{Opcode, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl Bhs for LogoutRequest {
    const OPCODE: Opcode = Opcode::LogoutRequest;

    fn parse(b: &[u8; BHS_LEN]) -> LogoutRequest {
        let imm = bit(b[0], 0x40);
        let f1 = b[1];
        LogoutRequest {
            immediate: imm,
            reason: f1 & 0x7f,
            itt: u32_at(b, 16),
            cid: u16_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[0] |= flag(h.immediate, 0x40);
        b[1] = F | (h.reason & 0x7f);
        put32(b, 16, h.itt);
        put16(b, 20, h.cid);
        put32(b, 24, h.cmd_sn);
        put32(b, 28, h.exp_stat_sn);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl Bhs for LogoutResponse {
    const OPCODE: Opcode = Opcode::LogoutResponse;

    fn parse(b: &[u8; BHS_LEN]) -> LogoutResponse {
        LogoutResponse {
            response: b[2],
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            time2wait: u16_at(b, 40),
            time2retain: u16_at(b, 42),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F;
        b[2] = h.response;
        put32(b, 16, h.itt);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        put16(b, 40, h.time2wait);
        put16(b, 42, h.time2retain);
    }
}
