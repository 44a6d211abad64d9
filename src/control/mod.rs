//! The control plane: what decides which LUNs are served and when the process
//! stops. [`supervisor`] is the state machine (sans-IO: events and the time in,
//! actions out, no tokio); [`run`] is the tokio layer that carries its actions out
//! (scans, drains, answers, the exit) and feeds their results back; [`start`]
//! brings the target up; [`rescan`] is one scan of the catalog, the shared map
//! and the static LUNs, ending in a LUN table; [`drain`] steers sessions away
//! before an exit. See docs/control-plane.md.

pub mod drain;
pub mod rescan;
pub mod run;
pub mod start;
pub mod supervisor;

pub use run::serve;
