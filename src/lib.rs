//! s3lun: a userspace iSCSI target serving read-only images as LUNs.
//!
//! The wire protocol lives in sans-IO modules ([`pdu`], [`login`], [`session`],
//! [`scsi`]) that tests drive directly; [`server`] is the tokio edge that moves bytes.

pub mod catalog;
pub mod config;
pub mod login;
pub mod lun;
pub mod lunmap;
pub mod pdu;
pub mod scsi;
pub mod server;
pub mod session;
pub mod store;
pub mod tools;
