//! SCSI Command and SCSI Response (RFC 7143 sections 11.3 and 11.4).

use super::{bhs, F, I};
use crate::pdu::ScsiStatus;

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ScsiCommand(ScsiCommand) {
        pub immediate: bool = bit(0, I),
        pub final_: bool = bit(1, F),
        pub read: bool = bit(1, 0x40),
        pub write: bool = bit(1, 0x20),
        /// Task attribute (SAM: simple, ordered, head of queue, ACA).
        pub attr: u8 = bits(1, 0x07),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub expected_len: u32 = at(20),
        pub cmd_sn: u32 = at(24),
        pub exp_stat_sn: u32 = at(28),
        pub cdb: [u8; 16] = at(32),
    }
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

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct ScsiResponse(ScsiResponse) {
        pub bidi_overflow: bool = bit(1, 0x10),
        pub bidi_underflow: bool = bit(1, 0x08),
        pub overflow: bool = bit(1, 0x04),
        pub underflow: bool = bit(1, 0x02),
        pub response: u8 = at(2),
        pub status: ScsiStatus = at(3),
        pub itt: u32 = at(16),
        pub snack_tag: u32 = at(20),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub exp_data_sn: u32 = at(36),
        pub bidi_residual: u32 = at(40),
        pub residual: u32 = at(44),
    }
    always(b) { b[1] |= F; }
}
