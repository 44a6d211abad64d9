//! Login Request and Response (RFC 7143 sections 11.12 and 11.13).
//! Each header's parse and encode sit side by side.

use super::{bit, flag, put16, put32, u16_at, u32_at, Bhs};
use crate::pdu::{Opcode, BHS_LEN};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl Bhs for LoginRequest {
    const OPCODE: Opcode = Opcode::LoginRequest;

    fn parse(b: &[u8; BHS_LEN]) -> LoginRequest {
        let f1 = b[1];
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b[8..14]);
        LoginRequest {
            transit: bit(f1, 0x80),
            cont: bit(f1, 0x40),
            csg: (f1 >> 2) & 3,
            nsg: f1 & 3,
            version_max: b[2],
            version_min: b[3],
            isid,
            tsih: u16_at(b, 14),
            itt: u32_at(b, 16),
            cid: u16_at(b, 20),
            cmd_sn: u32_at(b, 24),
            exp_stat_sn: u32_at(b, 28),
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[0] |= 0x40;
        b[1] = flag(h.transit, 0x80) | flag(h.cont, 0x40) | ((h.csg & 3) << 2) | (h.nsg & 3);
        b[2] = h.version_max;
        b[3] = h.version_min;
        b[8..14].copy_from_slice(&h.isid);
        put16(b, 14, h.tsih);
        put32(b, 16, h.itt);
        put16(b, 20, h.cid);
        put32(b, 24, h.cmd_sn);
        put32(b, 28, h.exp_stat_sn);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

impl Bhs for LoginResponse {
    const OPCODE: Opcode = Opcode::LoginResponse;

    fn parse(b: &[u8; BHS_LEN]) -> LoginResponse {
        let f1 = b[1];
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b[8..14]);
        LoginResponse {
            transit: bit(f1, 0x80),
            cont: bit(f1, 0x40),
            csg: (f1 >> 2) & 3,
            nsg: f1 & 3,
            version_max: b[2],
            version_active: b[3],
            isid,
            tsih: u16_at(b, 14),
            itt: u32_at(b, 16),
            stat_sn: u32_at(b, 24),
            exp_cmd_sn: u32_at(b, 28),
            max_cmd_sn: u32_at(b, 32),
            status_class: b[36],
            status_detail: b[37],
        }
    }

    fn encode(&self, b: &mut [u8; BHS_LEN]) {
        let h = self;
        b[1] = flag(h.transit, 0x80) | flag(h.cont, 0x40) | ((h.csg & 3) << 2) | (h.nsg & 3);
        b[2] = h.version_max;
        b[3] = h.version_active;
        b[8..14].copy_from_slice(&h.isid);
        put16(b, 14, h.tsih);
        put32(b, 16, h.itt);
        put32(b, 24, h.stat_sn);
        put32(b, 28, h.exp_cmd_sn);
        put32(b, 32, h.max_cmd_sn);
        b[36] = h.status_class;
        b[37] = h.status_detail;
    }
}
