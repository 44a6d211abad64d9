//! Asynchronous Message (RFC 7143 section 11.9).

use super::{bhs, F};
use crate::pdu::RESERVED_TAG;

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AsyncMessage(AsyncMessage) {
        pub lun: u64 = at(8),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub event: u8 = at(36),
        pub vcode: u8 = at(37),
        pub param1: u16 = at(38),
        pub param2: u16 = at(40),
        pub param3: u16 = at(42),
    }
    // Its ITT field is reserved as 0xffffffff.
    always(b) {
        b[1] |= F;
        b[16..20].copy_from_slice(&RESERVED_TAG.to_be_bytes());
    }
}
