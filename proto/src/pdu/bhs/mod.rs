//! One file per family of basic header segments (RFC 7143 section 11), each header
//! with its parse and encode side by side, as h2's `frame/` keeps its frames. The
//! [`Bhs`] trait is the codec every header implements; [`super::Header`] dispatches
//! on the opcode. Reserved fields are ignored on parse and written as zero.

mod async_message;
mod data;
mod login;
mod logout;
mod nop;
mod reject;
mod scsi;
mod snack;
mod task_mgmt;
mod text;

pub use async_message::AsyncMessage;
pub use data::{DataIn, DataOut, R2t};
pub use login::{LoginRequest, LoginResponse};
pub use logout::{LogoutRequest, LogoutResponse};
pub use nop::{NopIn, NopOut};
pub use reject::Reject;
pub use scsi::{ScsiCommand, ScsiResponse};
pub use snack::SnackRequest;
pub use task_mgmt::{TaskMgmtRequest, TaskMgmtResponse};
pub use text::{TextRequest, TextResponse};

use super::{Opcode, BHS_LEN};

/// A basic header segment's codec: every field but the opcode byte's type bits,
/// TotalAHSLength and DataSegmentLength, which [`super::Header`] and the framing own.
pub trait Bhs: Sized {
    const OPCODE: Opcode;
    /// Parse from 48 bytes whose opcode is `OPCODE`: every field is representable,
    /// so this cannot fail; semantic checks belong to the session layer.
    fn parse(b: &[u8; BHS_LEN]) -> Self;
    /// Write the fields into a zeroed BHS whose opcode byte is already set.
    fn encode(&self, b: &mut [u8; BHS_LEN]);
}

pub(super) fn u16_at(b: &[u8; BHS_LEN], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
pub(super) fn u32_at(b: &[u8; BHS_LEN], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(super) fn u64_at(b: &[u8; BHS_LEN], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(v)
}
pub(super) fn put16(b: &mut [u8; BHS_LEN], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
pub(super) fn put32(b: &mut [u8; BHS_LEN], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
pub(super) fn put64(b: &mut [u8; BHS_LEN], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}
pub(super) fn bit(b: u8, mask: u8) -> bool {
    b & mask != 0
}
pub(super) fn flag(on: bool, mask: u8) -> u8 {
    if on {
        mask
    } else {
        0
    }
}

/// The F (final) bit of byte 1.
pub(super) const F: u8 = 0x80;
