//! Where LUNs come from: boot image manifests in S3, every object under a prefix (PE
//! images), and local files. A scan yields the images to serve and the problems met;
//! a bad manifest is skipped with a log line and a counter and never stops the rest.

pub mod ims;
pub mod live;
pub mod lun_numbers;
pub mod manifest;
pub mod map_bindings;
pub mod merge;
pub mod numbers;
pub mod scan;
pub mod shared_map;

pub use scan::{scan, Entry, Problem, Scan};
