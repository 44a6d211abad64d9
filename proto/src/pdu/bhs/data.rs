//! SCSI Data-Out, Data-In and Ready To Transfer (RFC 7143 sections 11.7 and 11.8).
//! Each header's parse and encode sit side by side.

use super::{bit, flag, put32, put64, u32_at, u64_at, Bhs, F};
use crate::pdu::{Opcode, ScsiStatus, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

impl Bhs for DataOut {
    const OPCODE: Opcode = Opcode::DataOut;

    fn parse(b: &[u8; BHS_LEN]) -> DataOut {
        let f1 = b[1];
        DataOut {
            final_: bit(f1, F),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            exp_stat_sn: u32_at(b, 28),
            data_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = flag(h.final_, F);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ttt);
        put32(b, 28, h.exp_stat_sn);
        put32(b, 36, h.data_sn);
        put32(b, 40, h.buffer_offset);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataIn {
    pub final_: bool,
    pub ack: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// SCSI status carried in this PDU (the S bit), if any.
    pub status: Option<ScsiStatus>,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub residual: u32,
}

impl Bhs for DataIn {
    const OPCODE: Opcode = Opcode::DataIn;

    fn parse(b: &[u8; BHS_LEN]) -> DataIn {
        let f1 = b[1];
        DataIn {
            final_: bit(f1, F),
            ack: bit(f1, 0x40),
            overflow: bit(f1, 0x04),
            underflow: bit(f1, 0x02),
            status: bit(f1, 0x01).then_some(b[3].into()),
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            data_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
            residual: u32_at(b, 44),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = flag(h.final_, F)
            | flag(h.ack, 0x40)
            | flag(h.overflow, 0x04)
            | flag(h.underflow, 0x02)
            | flag(h.status.is_some(), 0x01);
        b[3] = h.status.map_or(0, u8::from);
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ttt);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        put32(b, 36, h.data_sn);
        put32(b, 40, h.buffer_offset);
        put32(b, 44, h.residual);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

impl Bhs for R2t {
    const OPCODE: Opcode = Opcode::R2t;

    fn parse(b: &[u8; BHS_LEN]) -> R2t {
        R2t {
            lun: u64_at(b, 8),
            itt: u32_at(b, 16),
            ttt: u32_at(b, 20),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            r2t_sn: u32_at(b, 36),
            buffer_offset: u32_at(b, 40),
            desired_len: u32_at(b, 44),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = F;
        put64(b, 8, h.lun);
        put32(b, 16, h.itt);
        put32(b, 20, h.ttt);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        put32(b, 36, h.r2t_sn);
        put32(b, 40, h.buffer_offset);
        put32(b, 44, h.desired_len);
    }
}
