//! What an operator steers while the target runs: the ALUA state of its port group
//! and the drain. Published on a watch channel; every connection applies a change
//! to its session (a unit attention, a logout request) and consults it at login.

use crate::login::Redirect;
use crate::scsi::AccessState;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Control {
    pub access: AccessState,
    /// Draining: new logins go to `redirect_to` (or are refused).
    pub draining: bool,
    /// Sessions are asked to log out within this many seconds (a drain, once the
    /// port group is in standby and multipath has moved away).
    pub logout_within: Option<u16>,
    /// TargetAddress values of peers for new logins while draining.
    pub redirect_to: Vec<String>,
}

impl Control {
    /// Where a new login goes now; `seq` spreads logins over several peers.
    pub fn redirect(&self, seq: u64) -> Option<Redirect> {
        if !self.draining {
            return None;
        }
        if self.redirect_to.is_empty() {
            return Some(Redirect::Unavailable);
        }
        let i = (seq % self.redirect_to.len() as u64) as usize;
        Some(Redirect::To(self.redirect_to[i].clone()))
    }
}
