//! SCSI Command and SCSI Response (RFC 7143 sections 11.3 and 11.4).
//! Each header's parse and encode sit side by side.

use super::{bit, flag, put32, put64, u32_at, u64_at, Bhs, F};
use crate::pdu::{Opcode, ScsiStatus, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    pub attr: u8,
    pub lun: u64,
    pub itt: u32,
    pub expected_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub cdb: [u8; 16],
}

impl ScsiCommand {
    /// A READ(10) of `blocks` 512-byte blocks at `lba` on LUN 0, as initiators send
    /// it (used by the tools, benches and tests that play initiator).
    pub fn read10(itt: u32, cmd_sn: u32, lba: u32, blocks: u16) -> ScsiCommand {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        ScsiCommand::read(itt, cmd_sn, cdb, blocks as u32 * 512)
    }

    /// Any data-in command on LUN 0 (simple task attribute, no immediate data).
    pub fn read(itt: u32, cmd_sn: u32, cdb: [u8; 16], expected_len: u32) -> ScsiCommand {
        ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: 0,
            itt,
            expected_len,
            cmd_sn,
            exp_stat_sn: 0,
            cdb,
        }
    }
}

impl Bhs for ScsiCommand {
    const OPCODE: Opcode = Opcode::ScsiCommand;

    fn parse(b: &[u8; BHS_LEN]) -> ScsiCommand {
        let imm = bit(b[0], 0x40);
        let f1 = b[1];
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&b[32..48]);
        ScsiCommand {
            immediate: imm,
            final_: bit(f1, F),
            read: bit(f1, 0x40),
            write: bit(f1, 0x20),
            attr: f1 & 0x07,
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            expected_len: u32_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
            cdb,
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[0] |= flag(h.immediate, 0x40);
        b[1] = flag(h.final_, F) | flag(h.read, 0x40) | flag(h.write, 0x20) | (h.attr & 0x07);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.expected_len);
        put32(b, 24, h.cmd_sn);
        put32(b, 28, h.exp_stat_sn);
        b[32..48].copy_from_slice(&h.cdb);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    pub response: u8,
    pub status: ScsiStatus,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_residual: u32,
    pub residual: u32,
}

impl Bhs for ScsiResponse {
    const OPCODE: Opcode = Opcode::ScsiResponse;

    fn parse(b: &[u8; BHS_LEN]) -> ScsiResponse {
        let f1 = b[1];
        ScsiResponse {
            bidi_overflow: bit(f1, 0x10),
            bidi_underflow: bit(f1, 0x08),
            overflow: bit(f1, 0x04),
            underflow: bit(f1, 0x02),
            response: b[2],
            status: b[3].into(),
            itt: u32_at(b, 16),
            snack_tag: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            exp_data_sn: u32_at(b, 36),
            bidi_residual: u32_at(b, 40),
            residual: u32_at(b, 44),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F
            | flag(h.bidi_overflow, 0x10)
            | flag(h.bidi_underflow, 0x08)
            | flag(h.overflow, 0x04)
            | flag(h.underflow, 0x02);
        b[2] = h.response;
        b[3] = h.status.into();
        put32(b, 16, h.itt);
        put32(b, 20, h.snack_tag);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        put32(b, 36, h.exp_data_sn);
        put32(b, 40, h.bidi_residual);
        put32(b, 44, h.residual);
    }
}
