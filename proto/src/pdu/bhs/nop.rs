//! NOP-Out and NOP-In (RFC 7143 sections 11.18 and 11.19): pings in both directions.

use super::{bhs, F, I};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NopOut(NopOut) {
        pub immediate: bool = bit(0, I),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub cmd_sn: u32 = at(24),
        pub exp_stat_sn: u32 = at(28),
    }
    always(b) { b[1] |= F; }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NopIn(NopIn) {
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
    }
    always(b) { b[1] |= F; }
}
