//! s3lun: a userspace iSCSI target serving read-only images as LUNs.
//!
//! The protocol is the sans-IO crate `s3lun-proto` (re-exported here as [`pdu`],
//! [`login`], [`session`], [`scsi`] and [`lun_table`]); this crate is the I/O around
//! it: [`server`] moves bytes and runs reads, [`store`] and its cache fetch image
//! bytes, [`catalog`] finds the images, [`config`] and [`assemble`] build a target,
//! [`admin`] is the operator's socket.

pub use s3lun_proto::{login, lun_table, pair, pdu, scsi, session};

pub mod admin;
pub mod assemble;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod generate;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod profile_tool;
pub mod server;
pub mod store;
pub mod tls;
pub mod tools;
pub mod warm;
