//! Login Request and Response (RFC 7143 sections 11.12 and 11.13).

use super::{bhs, I};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LoginRequest(LoginRequest) {
        pub transit: bool = bit(1, 0x80),
        pub cont: bool = bit(1, 0x40),
        pub csg: u8 = bits(1, 0x0c),
        pub nsg: u8 = bits(1, 0x03),
        pub version_max: u8 = at(2),
        pub version_min: u8 = at(3),
        pub isid: [u8; 6] = at(8),
        pub tsih: u16 = at(14),
        pub itt: u32 = at(16),
        pub cid: u16 = at(20),
        pub cmd_sn: u32 = at(24),
        pub exp_stat_sn: u32 = at(28),
    }
    // Login requests are always immediate.
    always(b) { b[0] |= I; }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct LoginResponse(LoginResponse) {
        pub transit: bool = bit(1, 0x80),
        pub cont: bool = bit(1, 0x40),
        pub csg: u8 = bits(1, 0x0c),
        pub nsg: u8 = bits(1, 0x03),
        pub version_max: u8 = at(2),
        pub version_active: u8 = at(3),
        pub isid: [u8; 6] = at(8),
        pub tsih: u16 = at(14),
        pub itt: u32 = at(16),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
        pub status_class: u8 = at(36),
        pub status_detail: u8 = at(37),
    }
}

impl LoginRequest {
    /// The one-PDU login of an initiator that skips authentication: operational
    /// stage straight to full feature phase, a new session (TSIH 0) on connection 0,
    /// as the tools, benches and tests that play initiator send it.
    pub fn to_full_feature(isid: [u8; 6], itt: u32, cmd_sn: u32, exp_stat_sn: u32) -> LoginRequest {
        LoginRequest {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid,
            tsih: 0,
            itt,
            cid: 0,
            cmd_sn,
            exp_stat_sn,
        }
    }
}
