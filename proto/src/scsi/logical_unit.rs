//! What the SCSI layer knows about one logical unit.

use super::Identity;

pub const BLOCK_SIZE: u32 = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunInfo {
    pub lun: u64,
    /// Image size in bytes; the LU exposes it rounded up to whole blocks.
    pub size_bytes: u64,
    pub block_size: u32,
    pub identity: Identity,
    /// Whether RESERVE(6)/RELEASE(6) are honoured. Off by default: on an image many
    /// initiators share, one initiator's reservation would fail everyone's reads.
    pub reservations: bool,
}

impl LunInfo {
    pub fn new(lun: u64, size_bytes: u64, identity: Identity) -> LunInfo {
        LunInfo {
            lun,
            size_bytes,
            block_size: BLOCK_SIZE,
            identity,
            reservations: false,
        }
    }

    pub fn blocks(&self) -> u64 {
        self.size_bytes.div_ceil(self.block_size as u64)
    }
}

/// The highest LUN number flat addressing (14 bits) can carry.
pub const MAX_LUN: u64 = 0x3fff;

/// Encode a LUN number in the 8-byte SAM LUN format (peripheral addressing below 256,
/// flat addressing above), as REPORT LUNS and the iSCSI LUN field carry it.
pub fn encode_lun(lun: u64) -> u64 {
    if lun < 256 {
        lun << 48
    } else {
        (0x4000 | (lun & 0x3fff)) << 48
    }
}

/// Decode the 8-byte LUN field of a PDU. Our LUNs are single-level: peripheral
/// device addressing on bus 0, or flat addressing, with the rest of the field zero
/// (SAM-5 section 4.7). Anything else (another bus, a second level, other addressing
/// methods) names no LUN we have: `u64::MAX`, answered LOGICAL UNIT NOT SUPPORTED.
pub fn decode_lun(field: u64) -> u64 {
    let top = (field >> 48) as u16;
    let lower_levels = field & 0x0000_ffff_ffff_ffff;
    if lower_levels != 0 {
        return u64::MAX;
    }
    match top >> 14 {
        // Peripheral device addressing: bits 13..8 are the bus identifier.
        0 if top & 0x3f00 == 0 => (top & 0xff) as u64,
        1 => (top & 0x3fff) as u64,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing_round_trips() {
        for l in [0u64, 1, 255, 256, 1000, 16383] {
            assert_eq!(decode_lun(encode_lun(l)), l);
        }
        assert_eq!(encode_lun(3), 0x0003_0000_0000_0000);
        // Bus 1, target 0: not ours. A second level: not ours.
        assert_eq!(decode_lun(0x0100_0000_0000_0000), u64::MAX);
        assert_eq!(decode_lun(0x0000_0001_0000_0000), u64::MAX);
        assert_eq!(decode_lun(0x4005_0000_0000_0001), u64::MAX);
        // Logical unit addressing and extended (well-known) LUNs: not ours.
        assert_eq!(decode_lun(0x8000_0000_0000_0000), u64::MAX);
        assert_eq!(decode_lun(0xc101_0000_0000_0000), u64::MAX);
    }
}
