//! Errors of the PDU layer, each mapped by the session layer to a Reject reason or a
//! closed connection.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PduError {
    #[error("PDU truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unknown or unsupported opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    #[error("data segment of {len} bytes exceeds the declared maximum of {max}")]
    DataSegmentTooLong { len: u32, max: u32 },
    #[error("header digest mismatch: computed 0x{computed:08x}, received 0x{received:08x}")]
    HeaderDigest { computed: u32, received: u32 },
    #[error("data digest mismatch: computed 0x{computed:08x}, received 0x{received:08x}")]
    DataDigest { computed: u32, received: u32 },
}

impl PduError {
    /// Whether the byte stream is still in sync after this error, so the connection
    /// can answer with a Reject and go on. A bad header digest or an unknown frame
    /// length means the stream can no longer be trusted.
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            PduError::DataDigest { .. } | PduError::UnknownOpcode(_)
        )
    }
}
