//! One iSCSI connection as a sans-IO state machine: the login phase, then the full
//! feature phase (CmdSN window, StatSN, SCSI commands, Data-In, NOP, Text, task
//! management, logout). PDUs go in; frames to send, image reads to perform and
//! lifecycle events come out through an [`Outbox`]. The tokio layer only moves bytes.

pub mod budget;
pub mod connection;
pub mod ffp;
#[cfg(test)]
mod ffp_tests;
pub mod outbox;
pub mod seq;
pub mod task;
pub mod text;
pub mod tmf;

pub use connection::Connection;
pub use ffp::{FfpSettings, FullFeature};
pub use outbox::{Event, Frame, Outbox, ReadRequest};
