//! SNACK Request (RFC 7143 section 11.16).

use super::{bhs, F};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SnackRequest(SnackRequest) {
        pub kind: u8 = bits(1, 0x0f),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub exp_stat_sn: u32 = at(28),
        pub beg_run: u32 = at(40),
        pub run_length: u32 = at(44),
    }
    always(b) { b[1] |= F; }
}
