//! One iSCSI connection as a sans-IO state machine: the login phase, then the full
//! feature phase (CmdSN window, StatSN, SCSI commands, Data-In, NOP, Text, task
//! management, logout). Bytes and time go in; frames to send, image reads to perform
//! and lifecycle events come out of [`Connection`]. The tokio layer only moves bytes.

pub mod budget;
pub mod connection;
pub mod full_feature;
pub mod outbox;
#[cfg(test)]
mod pair_tests;
pub mod seq;
pub mod task;

pub use connection::{Connection, ConnectionConfig};
pub use full_feature::{FullFeature, SessionSettings};
pub use outbox::{Event, Outbox, ReadRequest};
