//! Reject (RFC 7143 section 11.17).
//! Each header's parse and encode sit side by side.

use super::{put32, u32_at, Bhs, F};
use crate::pdu::{Opcode, RejectReason, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
}

impl Bhs for Reject {
    const OPCODE: Opcode = Opcode::Reject;

    fn parse(b: &[u8; BHS_LEN]) -> Reject {
        Reject {
            reason: b[2].into(),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            data_sn: u32_at(b, 36),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F;
        b[2] = h.reason.into();
        put32(b, 16, crate::pdu::RESERVED_TAG);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        put32(b, 36, h.data_sn);
    }
}
