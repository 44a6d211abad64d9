//! LUN identity as the Linux LIO target computes it, so that WWIDs match across
//! workers and after a switch from LIO: h = hex(sha224(msg)); product = h[0..15];
//! unit serial = h[0..31]; NAA-6 designator = 6, OUI 001405, then h[0..25].

use sha2::{Digest, Sha224};

pub const VENDOR: &[u8; 8] = b"LIO-ORG ";
pub const REVISION: &[u8; 4] = b"4.0 ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The string the identity was computed from.
    pub source: String,
    pub vendor: [u8; 8],
    pub product: [u8; 16],
    pub revision: [u8; 4],
    pub serial: String,
    pub naa: [u8; 16],
}

impl Identity {
    pub fn lio(msg: &str) -> Identity {
        let h = hex::encode(Sha224::digest(msg.as_bytes()));
        let mut product = [b' '; 16];
        product[..15].copy_from_slice(&h.as_bytes()[..15]);
        let serial = h[..31].to_string();
        let nibbles = format!("6001405{}", &h[..25]);
        let mut naa = [0u8; 16];
        // 32 hex digits always decode into 16 bytes.
        if let Ok(bytes) = hex::decode(&nibbles) {
            naa.copy_from_slice(&bytes);
        }
        Identity {
            source: msg.to_string(),
            vendor: *VENDOR,
            product,
            revision: *REVISION,
            serial,
            naa,
        }
    }

    /// The WWID Linux (udev scsi_id, multipath) derives from the NAA designator.
    pub fn wwid(&self) -> String {
        format!("3{}", hex::encode(self.naa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pe_example_from_design_notes() {
        let id = Identity::lio("s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs");
        assert_eq!(id.wwid(), "36001405de4cc04e7dacfb9ada0a6b4cc");
        assert!(id.serial.starts_with("de4cc04e7dacfb9ada0a6b4cc"));
        assert_eq!(id.serial.len(), 31);
        assert_eq!(&id.product[..15], b"de4cc04e7dacfb9");
    }
}
