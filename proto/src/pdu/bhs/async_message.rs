//! Asynchronous Message (RFC 7143 section 11.9).
//! Each header's parse and encode sit side by side.

use super::{put16, put32, put64, u16_at, u32_at, u64_at, Bhs, F};
use crate::pdu::{Opcode, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
}

impl Bhs for AsyncMessage {
    const OPCODE: Opcode = Opcode::AsyncMessage;

    fn parse(b: &[u8; BHS_LEN]) -> AsyncMessage {
        AsyncMessage {
            lun: u64_at(b, 8),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            event: b[36],
            vcode: b[37],
            param1: u16_at(b, 38),
            param2: u16_at(b, 40),
            param3: u16_at(b, 42),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F;
        put64(b, 8, h.lun);
        put32(b, 16, crate::pdu::RESERVED_TAG);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        b[36] = h.event;
        b[37] = h.vcode;
        put16(b, 38, h.param1);
        put16(b, 40, h.param2);
        put16(b, 42, h.param3);
    }
}
