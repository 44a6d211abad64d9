//! Sense data (SPC-4 section 4.5): sense key plus additional sense code and qualifier,
//! encoded in fixed format, with the sense-key specific field pointer for bad CDB fields.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// For ILLEGAL REQUEST: (field is in the CDB, byte offset, bit) of the bad field.
    pub field: Option<(bool, u16, Option<u8>)>,
}

pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

impl Sense {
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            field: None,
        }
    }

    pub const NO_SENSE: Sense = Sense::new(key::NO_SENSE, 0, 0);
    pub const INVALID_OPCODE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
    pub const LU_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x1a, 0x00);
    pub const SAVING_PARAMETERS_UNSUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00);
    pub const WRITE_PROTECTED: Sense = Sense::new(key::DATA_PROTECT, 0x27, 0x00);
    pub const POWER_ON_RESET: Sense = Sense::new(key::UNIT_ATTENTION, 0x29, 0x00);
    pub const BUS_DEVICE_RESET: Sense = Sense::new(key::UNIT_ATTENTION, 0x29, 0x03);
    pub const REPORTED_LUNS_CHANGED: Sense = Sense::new(key::UNIT_ATTENTION, 0x3f, 0x0e);
    /// NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED: new content, same LUN.
    pub const MEDIUM_MAY_HAVE_CHANGED: Sense = Sense::new(key::UNIT_ATTENTION, 0x28, 0x00);
    /// The image's object is gone and these blocks were never cached.
    pub const MEDIUM_NOT_PRESENT: Sense = Sense::new(key::NOT_READY, 0x3a, 0x00);
    /// ALUA (SPC-4 5.15.2.4): what a state that does not allow a command answers.
    pub const ASYMMETRIC_ACCESS_TRANSITION: Sense = Sense::new(key::NOT_READY, 0x04, 0x0a);
    pub const TARGET_PORT_IN_STANDBY: Sense = Sense::new(key::NOT_READY, 0x04, 0x0b);
    pub const TARGET_PORT_UNAVAILABLE: Sense = Sense::new(key::NOT_READY, 0x04, 0x0c);
    /// ASYMMETRIC ACCESS STATE CHANGED: the port group moved to another state.
    pub const ASYMMETRIC_ACCESS_STATE_CHANGED: Sense = Sense::new(key::UNIT_ATTENTION, 0x2a, 0x06);
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x11, 0x00);
    pub const NOT_READY_CAUSE_UNKNOWN: Sense = Sense::new(key::NOT_READY, 0x04, 0x00);
    pub const NOT_READY_BECOMING_READY: Sense = Sense::new(key::NOT_READY, 0x04, 0x01);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Sense =
        Sense::new(key::UNIT_ATTENTION, 0x2f, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Sense = Sense::new(key::MISCOMPARE, 0x1d, 0x00);
    pub const INTERNAL_TARGET_FAILURE: Sense = Sense::new(key::HARDWARE_ERROR, 0x44, 0x00);
    /// The iSCSI condition of RFC 7143 section 11.4.7.2: data lost to a digest error.
    pub const PROTOCOL_SERVICE_CRC_ERROR: Sense = Sense::new(key::ABORTED_COMMAND, 0x47, 0x05);

    /// INVALID FIELD IN CDB pointing at `byte` (and `bit`, when one bit is at fault).
    pub fn bad_cdb_field(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            field: Some((true, byte, bit)),
            ..Sense::INVALID_FIELD_IN_CDB
        }
    }

    /// Fixed-format sense data, 18 bytes.
    pub fn fixed(&self) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = self.key & 0x0f;
        s[7] = 10;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some((cdb, byte, bit)) = self.field {
            s[15] = 0x80 | if cdb { 0x40 } else { 0 };
            if let Some(b) = bit {
                s[15] |= 0x08 | (b & 7);
            }
            s[16..18].copy_from_slice(&byte.to_be_bytes());
        }
        s
    }

    /// Data segment of a SCSI Response carrying this sense: 2-byte length, then data.
    pub fn response_segment(&self) -> Vec<u8> {
        let f = self.fixed();
        let mut v = Vec::with_capacity(2 + f.len());
        v.extend_from_slice(&(f.len() as u16).to_be_bytes());
        v.extend_from_slice(&f);
        v
    }

    /// The sense an initiator reads from a SCSI Response's data segment (2-byte
    /// length, then fixed or descriptor format): key, ASC and ASCQ; None when the
    /// segment holds no sense it can read.
    pub fn from_response_segment(seg: &[u8]) -> Option<Sense> {
        let data = seg.get(2..)?;
        let (key, asc, ascq) = match data.first()? & 0x7f {
            0x70 | 0x71 => (*data.get(2)?, *data.get(12)?, *data.get(13)?),
            0x72 | 0x73 => (*data.get(1)?, *data.get(2)?, *data.get(3)?),
            _ => return None,
        };
        Some(Sense::new(key & 0x0f, asc, ascq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initiator_reads_back_what_a_response_carries() {
        let s = Sense::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR;
        assert_eq!(Sense::from_response_segment(&s.response_segment()), Some(s));
        // Descriptor format: key, ASC and ASCQ in bytes 1..4.
        let desc = [0, 8, 0x72, 0x06, 0x29, 0x01, 0, 0, 0, 0];
        assert_eq!(
            Sense::from_response_segment(&desc),
            Some(Sense::new(key::UNIT_ATTENTION, 0x29, 0x01))
        );
        assert_eq!(Sense::from_response_segment(&[0, 2, 0x70]), None);
        assert_eq!(Sense::from_response_segment(&[0, 0]), None);
    }

    #[test]
    fn fixed_format_layout() {
        let s = Sense::bad_cdb_field(2, Some(5)).fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!((s[12], s[13]), (0x24, 0x00));
        assert_eq!(s[15], 0x80 | 0x40 | 0x08 | 5);
        assert_eq!(&s[16..18], &[0, 2]);
        let seg = Sense::WRITE_PROTECTED.response_segment();
        assert_eq!(&seg[..2], &[0, 18]);
        assert_eq!(seg[4], 0x07);
        assert_eq!(seg[14], 0x27);
    }
}
