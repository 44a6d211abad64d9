//! Text Request and Response (RFC 7143 sections 11.10 and 11.11).

use super::{bhs, F, I};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TextRequest(TextRequest) {
        pub immediate: bool = bit(0, I),
        pub final_: bool = bit(1, F),
        pub cont: bool = bit(1, 0x40),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub cmd_sn: u32 = at(24),
        pub exp_stat_sn: u32 = at(28),
    }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TextResponse(TextResponse) {
        pub final_: bool = bit(1, F),
        pub cont: bool = bit(1, 0x40),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ttt: u32 = at(20),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
    }
}
