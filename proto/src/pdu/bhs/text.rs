//! Text Request and Response (RFC 7143 sections 11.10 and 11.11).
//! Each header's parse and encode sit side by side.

use super::{bit, flag, put32, put64, u32_at, u64_at, Bhs, F};
use crate::pdu::{Opcode, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl Bhs for TextRequest {
    const OPCODE: Opcode = Opcode::TextRequest;

    fn parse(b: &[u8; BHS_LEN]) -> TextRequest {
        let imm = bit(b[0], 0x40);
        let f1 = b[1];
        TextRequest {
            immediate: imm,
            final_: bit(f1, F),
            cont: bit(f1, 0x40),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[0] |= flag(h.immediate, 0x40);
        b[1] = flag(h.final_, F) | flag(h.cont, 0x40);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ttt);
        put32(b, 24, h.cmd_sn);
        put32(b, 28, h.exp_stat_sn);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl Bhs for TextResponse {
    const OPCODE: Opcode = Opcode::TextResponse;

    fn parse(b: &[u8; BHS_LEN]) -> TextResponse {
        let f1 = b[1];
        TextResponse {
            final_: bit(f1, F),
            cont: bit(f1, 0x40),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = flag(h.final_, F) | flag(h.cont, 0x40);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ttt);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
    }
}
