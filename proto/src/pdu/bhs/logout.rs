//! Logout Request and Response (RFC 7143 sections 11.14 and 11.15).

use super::{bhs, F, I};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogoutRequest(LogoutRequest) {
        pub immediate: bool = bit(0, I),
        pub reason: u8 = bits(1, 0x7f),
        pub itt: u32 = at(16),
        pub cid: u16 = at(20),
        pub cmd_sn: u32 = at(24),
        pub exp_stat_sn: u32 = at(28),
    }
    always(b) { b[1] |= F; }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogoutResponse(LogoutResponse) {
        pub response: u8 = at(2),
        pub itt: u32 = at(16),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub time2wait: u16 = at(40),
        pub time2retain: u16 = at(42),
    }
    always(b) { b[1] |= F; }
}

impl LogoutRequest {
    /// Close the whole session (reason 0) from connection 0, as an immediate command.
    pub fn close_session(itt: u32, cmd_sn: u32, exp_stat_sn: u32) -> LogoutRequest {
        LogoutRequest {
            immediate: true,
            reason: 0,
            itt,
            cid: 0,
            cmd_sn,
            exp_stat_sn,
        }
    }
}
