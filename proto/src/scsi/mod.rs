//! The read-only SBC/SPC command set, sans-IO: CDB decoding, sense data, INQUIRY and
//! its VPD pages, MODE SENSE, REPORT LUNS, READ CAPACITY and READ range checks.
//!
//! [`exec::execute`] turns a CDB into an [`exec::Outcome`]: data to return, a byte
//! range for the caller to read from the image, or CHECK CONDITION sense. Reading the
//! image and sending Data-In belong to the session and server layers.

pub mod alua;
pub mod cdb;
pub mod commands;
pub mod exec;
pub mod identity;
pub mod inquiry;
pub mod logical_unit;
pub mod mode;
pub mod opcodes;
pub mod port;
pub mod reservation;
pub mod sense;

pub use alua::{Access, AccessState};
pub use exec::{execute, ExecCtx, Outcome};
pub use identity::Identity;
pub use logical_unit::LunInfo;
pub use port::TargetPort;
pub use sense::Sense;

/// SCSI status travels in iSCSI headers, so its enum lives with them.
pub use crate::pdu::ScsiStatus;

/// Copy at most `alloc` bytes of a response, as every SPC command with an ALLOCATION
/// LENGTH field requires.
pub(crate) fn truncate(mut data: Vec<u8>, alloc: usize) -> Vec<u8> {
    data.truncate(alloc);
    data
}
