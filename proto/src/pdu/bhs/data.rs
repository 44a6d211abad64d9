//! SCSI Data-Out, Data-In and Ready To Transfer (RFC 7143 sections 11.7 and 11.8).

use super::{bhs, F};
use crate::pdu::ScsiStatus;

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DataOut(DataOut) {
        pub final_: bool = bit(1, F),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub exp_stat_sn: u32 = at(28),
        pub data_sn: u32 = at(36),
        pub buffer_offset: u32 = at(40),
    }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct DataIn(DataIn) {
        pub final_: bool = bit(1, F),
        pub ack: bool = bit(1, 0x40),
        pub overflow: bool = bit(1, 0x04),
        pub underflow: bool = bit(1, 0x02),
        /// SCSI status carried in this PDU (the S bit), if any.
        pub status: Option<ScsiStatus> = flagged(1, 0x01, 3),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub data_sn: u32 = at(36),
        pub buffer_offset: u32 = at(40),
        pub residual: u32 = at(44),
    }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct R2t(R2t) {
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub r2t_sn: u32 = at(36),
        pub buffer_offset: u32 = at(40),
        pub desired_len: u32 = at(44),
    }
    always(b) { b[1] |= F; }
}
