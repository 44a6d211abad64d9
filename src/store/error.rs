//! Errors of the storage layer, mapped by the session to SCSI sense.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("I/O error on {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("image {0} is empty")]
    Empty(String),
    #[error("read of {len} bytes at {offset} is beyond the image end {size}")]
    OutOfRange { offset: u64, len: usize, size: u64 },
    #[error("{0} changed since it was opened")]
    Stale(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}
