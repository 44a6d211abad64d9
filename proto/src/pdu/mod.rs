//! Sans-IO iSCSI PDU codec (RFC 7143 section 11): the 48-byte basic header segment,
//! additional header segments, data segment with padding, and CRC32C digests.
//!
//! Nothing here does I/O: [`framing::decode`] slices complete PDUs out of a receive
//! buffer without copying payloads, and [`header::Header::encode`] writes a BHS into a
//! caller-owned array so the send path can reuse buffers.

pub mod bhs;
pub mod codes;
pub mod error;
pub mod framing;
pub mod header;
pub mod opcode;

pub use bhs::*;
pub use codes::{RejectReason, ScsiStatus, TmfFunction, TmfResponse};
pub use error::PduError;
pub use framing::{decode, parse_frame, Frame, FrameConfig, Pdu};
pub use header::Header;
pub use opcode::Opcode;

/// Length of the basic header segment.
pub const BHS_LEN: usize = 48;
/// Initiator Task Tag / Target Transfer Tag value meaning "none".
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Number of zero bytes that pad `len` to a 4-byte boundary.
pub fn pad_len(len: usize) -> usize {
    (4 - (len & 3)) & 3
}
