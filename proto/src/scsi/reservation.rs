//! SPC-2 RESERVE(6)/RELEASE(6) reservations: state shared by every session on a LU,
//! and the conflict rule applied before a command runs.

use super::cdb::op;
use super::commands::{lookup, Reservation};
use super::Outcome;

/// Per-LU state shared by all sessions (behind a mutex in [`crate::lun_table::Lun`]).
#[derive(Debug, Default)]
pub struct LuState {
    /// The I_T nexus (`initiator,i,0xISID`) holding a RESERVE(6), if any.
    pub reserved_by: Option<String>,
}

/// Commands a non-holder may still send (SPC-2 table 32, as Linux relies on): the
/// command table says which.
fn allowed_under_reservation(cdb: &[u8; 16]) -> bool {
    lookup(cdb).is_some_and(|c| c.reservation == Reservation::Allowed)
}

/// Apply reservations: `Some` when the command is fully answered here (RESERVE,
/// RELEASE, or a conflict), `None` when it should run normally.
pub fn apply(state: &mut LuState, nexus: &str, cdb: &[u8; 16]) -> Option<Outcome> {
    let holder_is_other = state.reserved_by.as_deref().is_some_and(|h| h != nexus);
    match cdb[0] {
        op::RESERVE_6 => Some(if holder_is_other {
            Outcome::Conflict
        } else {
            state.reserved_by = Some(nexus.to_string());
            Outcome::Good
        }),
        op::RELEASE_6 => {
            // Releasing someone else's reservation is a successful no-op.
            if !holder_is_other {
                state.reserved_by = None;
            }
            Some(Outcome::Good)
        }
        _ if holder_is_other && !allowed_under_reservation(cdb) => Some(Outcome::Conflict),
        _ => None,
    }
}

/// The nexus went away (logout, connection loss) or the LU was reset.
pub fn release_if_held(state: &mut LuState, nexus: &str) {
    if state.reserved_by.as_deref() == Some(nexus) {
        state.reserved_by = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdb(op: u8) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = op;
        c
    }

    #[test]
    fn reserve_conflict_release() {
        let mut s = LuState::default();
        assert_eq!(apply(&mut s, "a", &cdb(op::RESERVE_6)), Some(Outcome::Good));
        assert_eq!(apply(&mut s, "a", &cdb(op::RESERVE_6)), Some(Outcome::Good));
        assert_eq!(
            apply(&mut s, "b", &cdb(op::RESERVE_6)),
            Some(Outcome::Conflict)
        );
        assert_eq!(
            apply(&mut s, "b", &cdb(op::MODE_SENSE_6)),
            Some(Outcome::Conflict)
        );
        assert_eq!(apply(&mut s, "b", &cdb(op::INQUIRY)), None);
        assert_eq!(apply(&mut s, "b", &cdb(op::RELEASE_6)), Some(Outcome::Good));
        assert_eq!(s.reserved_by.as_deref(), Some("a"));
        assert_eq!(apply(&mut s, "a", &cdb(op::MODE_SENSE_6)), None);
        assert_eq!(apply(&mut s, "a", &cdb(op::RELEASE_6)), Some(Outcome::Good));
        assert_eq!(apply(&mut s, "b", &cdb(op::RESERVE_6)), Some(Outcome::Good));
        release_if_held(&mut s, "b");
        assert_eq!(s.reserved_by, None);
    }
}
