//! Errors of the storage layer, and the SCSI sense each becomes for the initiator.

use thiserror::Error;

use crate::scsi::Sense;

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
    /// The S3 server (or a proxy) answers in a way s3lun refuses to work around, such
    /// as whole objects for ranged reads.
    #[error("S3 server misbehaves: {0}")]
    BadServer(String),
    /// A small object (a manifest, the map, an index) above its size bound: not read.
    #[error("{0}")]
    TooLarge(String),
    /// S3 refused the request (403): no permission, or (without ListBucket) no such
    /// key.
    #[error("access denied: {0}")]
    Forbidden(String),
    /// Bytes that are not what the image's digest index says, after every retry.
    #[error("{0}")]
    Corrupt(String),
}

impl StoreError {
    /// What the initiator is told when a read fails this way.
    pub fn sense(&self) -> Sense {
        match self {
            StoreError::OutOfRange { .. } => Sense::LBA_OUT_OF_RANGE,
            // The object changed: refuse rather than mix versions.
            StoreError::Stale(_) | StoreError::BadServer(_) => Sense::NOT_READY_CAUSE_UNKNOWN,
            // S3 slow or down past the deadline: worth retrying.
            StoreError::Unavailable(_) | StoreError::Forbidden(_) => {
                Sense::NOT_READY_BECOMING_READY
            }
            // The object was deleted: what the cache holds is still served, the rest
            // is not there (never other bytes).
            StoreError::NotFound(_) => Sense::MEDIUM_NOT_PRESENT,
            _ => Sense::UNRECOVERED_READ_ERROR,
        }
    }
}
