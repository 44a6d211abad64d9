//! The basic header segment of any PDU as one typed enum (RFC 7143 section 11):
//! parse dispatches on the opcode to the header's own codec in [`super::bhs`], encode
//! writes the opcode and framing lengths and lets the header write the rest.

use super::bhs::*;
use super::{Opcode, PduError, BHS_LEN};

/// A parsed basic header segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    SnackRequest(SnackRequest),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

impl Header {
    pub fn opcode(&self) -> Opcode {
        match self {
            Header::NopOut(_) => Opcode::NopOut,
            Header::ScsiCommand(_) => Opcode::ScsiCommand,
            Header::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Header::LoginRequest(_) => Opcode::LoginRequest,
            Header::TextRequest(_) => Opcode::TextRequest,
            Header::DataOut(_) => Opcode::DataOut,
            Header::LogoutRequest(_) => Opcode::LogoutRequest,
            Header::SnackRequest(_) => Opcode::SnackRequest,
            Header::NopIn(_) => Opcode::NopIn,
            Header::ScsiResponse(_) => Opcode::ScsiResponse,
            Header::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Header::LoginResponse(_) => Opcode::LoginResponse,
            Header::TextResponse(_) => Opcode::TextResponse,
            Header::DataIn(_) => Opcode::DataIn,
            Header::LogoutResponse(_) => Opcode::LogoutResponse,
            Header::R2t(_) => Opcode::R2t,
            Header::AsyncMessage(_) => Opcode::AsyncMessage,
            Header::Reject(_) => Opcode::Reject,
        }
    }

    /// Initiator Task Tag of the PDU, where it has one.
    pub fn itt(&self) -> Option<u32> {
        Some(match self {
            Header::NopOut(h) => h.itt,
            Header::ScsiCommand(h) => h.itt,
            Header::TaskMgmtRequest(h) => h.itt,
            Header::LoginRequest(h) => h.itt,
            Header::TextRequest(h) => h.itt,
            Header::DataOut(h) => h.itt,
            Header::LogoutRequest(h) => h.itt,
            Header::SnackRequest(h) => h.itt,
            Header::NopIn(h) => h.itt,
            Header::ScsiResponse(h) => h.itt,
            Header::TaskMgmtResponse(h) => h.itt,
            Header::LoginResponse(h) => h.itt,
            Header::TextResponse(h) => h.itt,
            Header::DataIn(h) => h.itt,
            Header::LogoutResponse(h) => h.itt,
            Header::R2t(h) => h.itt,
            _ => return None,
        })
    }

    /// Parse a basic header segment. Only the opcode can make this fail: every other
    /// field is representable, and semantic checks belong to the session layer.
    pub fn parse(b: &[u8; BHS_LEN]) -> Result<Header, PduError> {
        Ok(match Opcode::from_byte(b[0])? {
            Opcode::NopOut => Header::NopOut(NopOut::parse(b)),
            Opcode::ScsiCommand => Header::ScsiCommand(ScsiCommand::parse(b)),
            Opcode::TaskMgmtRequest => Header::TaskMgmtRequest(TaskMgmtRequest::parse(b)),
            Opcode::LoginRequest => Header::LoginRequest(LoginRequest::parse(b)),
            Opcode::TextRequest => Header::TextRequest(TextRequest::parse(b)),
            Opcode::DataOut => Header::DataOut(DataOut::parse(b)),
            Opcode::LogoutRequest => Header::LogoutRequest(LogoutRequest::parse(b)),
            Opcode::SnackRequest => Header::SnackRequest(SnackRequest::parse(b)),
            Opcode::NopIn => Header::NopIn(NopIn::parse(b)),
            Opcode::ScsiResponse => Header::ScsiResponse(ScsiResponse::parse(b)),
            Opcode::TaskMgmtResponse => Header::TaskMgmtResponse(TaskMgmtResponse::parse(b)),
            Opcode::LoginResponse => Header::LoginResponse(LoginResponse::parse(b)),
            Opcode::TextResponse => Header::TextResponse(TextResponse::parse(b)),
            Opcode::DataIn => Header::DataIn(DataIn::parse(b)),
            Opcode::LogoutResponse => Header::LogoutResponse(LogoutResponse::parse(b)),
            Opcode::R2t => Header::R2t(R2t::parse(b)),
            Opcode::AsyncMessage => Header::AsyncMessage(AsyncMessage::parse(b)),
            Opcode::Reject => Header::Reject(Reject::parse(b)),
        })
    }

    /// Encode into a 48-byte BHS, with the framing fields supplied by the caller.
    pub fn encode(&self, total_ahs_words: u8, data_len: u32, b: &mut [u8; BHS_LEN]) {
        *b = [0u8; BHS_LEN];
        b[0] = self.opcode() as u8;
        b[4] = total_ahs_words;
        b[5..8].copy_from_slice(&data_len.to_be_bytes()[1..]);
        match self {
            Header::NopOut(h) => h.encode(b),
            Header::ScsiCommand(h) => h.encode(b),
            Header::TaskMgmtRequest(h) => h.encode(b),
            Header::LoginRequest(h) => h.encode(b),
            Header::TextRequest(h) => h.encode(b),
            Header::DataOut(h) => h.encode(b),
            Header::LogoutRequest(h) => h.encode(b),
            Header::SnackRequest(h) => h.encode(b),
            Header::NopIn(h) => h.encode(b),
            Header::ScsiResponse(h) => h.encode(b),
            Header::TaskMgmtResponse(h) => h.encode(b),
            Header::LoginResponse(h) => h.encode(b),
            Header::TextResponse(h) => h.encode(b),
            Header::DataIn(h) => h.encode(b),
            Header::LogoutResponse(h) => h.encode(b),
            Header::R2t(h) => h.encode(b),
            Header::AsyncMessage(h) => h.encode(b),
            Header::Reject(h) => h.encode(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_opcode(op: Opcode, mut raw: [u8; BHS_LEN]) -> [u8; BHS_LEN] {
        raw[0] = (raw[0] & 0x40) | op as u8;
        raw
    }

    proptest! {
        // For every opcode: whatever 48 bytes parse to, encoding that and parsing
        // again gives the same typed header, and the framing fields survive.
        #[test]
        fn every_opcode_round_trips(
            idx in 0usize..Opcode::ALL.len(),
            raw in proptest::array::uniform32(any::<u8>()),
            tail in proptest::array::uniform16(any::<u8>()),
            ahs in any::<u8>(),
            dsl in 0u32..(1 << 24),
        ) {
            let op = Opcode::ALL[idx];
            let mut bytes = [0u8; BHS_LEN];
            bytes[..32].copy_from_slice(&raw);
            bytes[32..].copy_from_slice(&tail);
            let bytes = with_opcode(op, bytes);
            let h = Header::parse(&bytes).expect("known opcode parses");
            prop_assert_eq!(h.opcode(), op);
            let mut out = [0u8; BHS_LEN];
            h.encode(ahs, dsl, &mut out);
            prop_assert_eq!(out[4], ahs);
            prop_assert_eq!(u32::from_be_bytes([0, out[5], out[6], out[7]]), dsl);
            let again = Header::parse(&out).expect("encoded header parses");
            prop_assert_eq!(again, h);
        }

        #[test]
        fn unknown_opcodes_are_errors(code in 0u8..64) {
            let mut b = [0u8; BHS_LEN];
            b[0] = code;
            let known = Opcode::ALL.iter().any(|o| *o as u8 == code);
            prop_assert_eq!(Header::parse(&b).is_ok(), known);
        }
    }

    #[test]
    fn scsi_command_fields_land_where_rfc_puts_them() {
        let h = Header::ScsiCommand(ScsiCommand {
            immediate: true,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: 0x0001_0000_0000_0000,
            itt: 0x11223344,
            expected_len: 4096,
            cmd_sn: 7,
            exp_stat_sn: 9,
            cdb: [0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        });
        let mut b = [0u8; BHS_LEN];
        h.encode(0, 0, &mut b);
        assert_eq!(b[0], 0x41);
        assert_eq!(b[1], 0xc1);
        assert_eq!(&b[8..10], &[0, 1]);
        assert_eq!(&b[16..20], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&b[20..24], &4096u32.to_be_bytes());
        assert_eq!(b[32], 0x28);
    }
}
