//! The sans-IO core of the s3lun iSCSI target. Nothing here does I/O, spawns, sleeps
//! or reads a clock: bytes and time go in, bytes to send, timers and events come out.
//!
//! - [`pdu`]: the PDU codec (RFC 7143 section 11) and framing with digests.
//! - [`login`]: login phase, key negotiation and CHAP.
//! - [`session`]: one connection from first byte to close ([`session::Connection`]).
//! - [`scsi`]: the read-only SBC/SPC command set.
//! - [`lun_table`]: the LUNs a target presents; the stores behind them belong to the
//!   I/O layer, which answers reads by LUN number.

pub mod login;
pub mod lun_table;
pub mod pair;
pub mod pdu;
pub mod scsi;
pub mod session;
