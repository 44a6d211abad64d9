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
}

impl LunInfo {
    pub fn new(lun: u64, size_bytes: u64, identity: Identity) -> LunInfo {
        LunInfo {
            lun,
            size_bytes,
            block_size: BLOCK_SIZE,
            identity,
        }
    }

    pub fn blocks(&self) -> u64 {
        self.size_bytes.div_ceil(self.block_size as u64)
    }
}

/// Encode a LUN number in the 8-byte SAM LUN format (peripheral addressing below 256,
/// flat addressing above), as REPORT LUNS and the iSCSI LUN field carry it.
pub fn encode_lun(lun: u64) -> u64 {
    if lun < 256 {
        lun << 48
    } else {
        (0x4000 | (lun & 0x3fff)) << 48
    }
}

/// Decode the 8-byte LUN field of a PDU.
pub fn decode_lun(field: u64) -> u64 {
    let top = (field >> 48) as u16;
    match top >> 14 {
        0 => (top & 0xff) as u64,
        1 => (top & 0x3fff) as u64,
        // Other addressing methods name no LUN we have.
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
    }
}
