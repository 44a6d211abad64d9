//! Reject (RFC 7143 section 11.17).

use super::{bhs, F};
use crate::pdu::{RejectReason, RESERVED_TAG};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Reject(Reject) {
        pub reason: RejectReason = at(2),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub data_sn: u32 = at(36),
    }
    // Its ITT field is reserved as 0xffffffff.
    always(b) {
        b[1] |= F;
        b[16..20].copy_from_slice(&RESERVED_TAG.to_be_bytes());
    }
}
