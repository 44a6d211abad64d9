//! SNACK Request (RFC 7143 section 11.16).
//! Each header's parse and encode sit side by side.

use super::{put32, put64, u32_at, u64_at, Bhs, F};
use crate::pdu::{Opcode, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnackRequest {
    pub kind: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl Bhs for SnackRequest {
    const OPCODE: Opcode = Opcode::SnackRequest;

    fn parse(b: &[u8; BHS_LEN]) -> SnackRequest {
        let f1 = b[1];
        SnackRequest {
            kind: f1 & 0x0f,
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            exp_stat_sn: u32_at(b, 28),
            beg_run: u32_at(b, 40),
            run_length: u32_at(b, 44),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F | (h.kind & 0x0f);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ttt);
        put32(b, 28, h.exp_stat_sn);
        put32(b, 40, h.beg_run);
        put32(b, 44, h.run_length);
    }
}
