//! Asymmetric logical unit access (SPC-4 section 5.15): the state of our one target
//! port group, which commands each state lets through, and the sense that refuses the
//! others. dm-multipath's ALUA handler reads the state with REPORT TARGET PORT GROUPS
//! and, on these senses, moves I/O to another path instead of failing it.

use std::fmt;

use super::Sense;

/// The target port group's asymmetric access state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessState {
    #[default]
    ActiveOptimized,
    ActiveNonOptimized,
    Standby,
    Unavailable,
    Transitioning,
}

/// Which states a command runs in (a column of the command table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every state: what an initiator needs to find out what is going on
    /// (INQUIRY, REPORT LUNS, REPORT TARGET PORT GROUPS, REQUEST SENSE).
    Always,
    /// The active states and standby (SPC-4 5.15.2.4.4: mode and reservation
    /// queries, REPORT SUPPORTED OPERATION CODES).
    Standby,
    /// The active states only: media access and everything else.
    Active,
}

impl AccessState {
    pub const ALL: [AccessState; 5] = [
        AccessState::ActiveOptimized,
        AccessState::ActiveNonOptimized,
        AccessState::Standby,
        AccessState::Unavailable,
        AccessState::Transitioning,
    ];

    /// The code REPORT TARGET PORT GROUPS carries.
    pub fn code(self) -> u8 {
        match self {
            AccessState::ActiveOptimized => 0x0,
            AccessState::ActiveNonOptimized => 0x1,
            AccessState::Standby => 0x2,
            AccessState::Unavailable => 0x3,
            AccessState::Transitioning => 0xf,
        }
    }

    /// The name operators type (`s3lun admin alua standby`).
    pub fn name(self) -> &'static str {
        match self {
            AccessState::ActiveOptimized => "active-optimized",
            AccessState::ActiveNonOptimized => "active-non-optimized",
            AccessState::Standby => "standby",
            AccessState::Unavailable => "unavailable",
            AccessState::Transitioning => "transitioning",
        }
    }

    pub fn parse(s: &str) -> Option<AccessState> {
        AccessState::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Whether a command with this access column runs now; if not, the sense that
    /// refuses it.
    pub fn admit(self, access: Access) -> Result<(), Sense> {
        let allowed = matches!(
            (self, access),
            (_, Access::Always)
                | (
                    AccessState::ActiveOptimized | AccessState::ActiveNonOptimized,
                    _
                )
                | (AccessState::Standby, Access::Standby)
        );
        match (allowed, self) {
            (true, _) => Ok(()),
            (false, AccessState::Standby) => Err(Sense::TARGET_PORT_IN_STANDBY),
            (false, AccessState::Unavailable) => Err(Sense::TARGET_PORT_UNAVAILABLE),
            (false, _) => Err(Sense::ASYMMETRIC_ACCESS_TRANSITION),
        }
    }
}

impl fmt::Display for AccessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_refuses_what_spc4_says() {
        use AccessState::*;
        for s in AccessState::ALL {
            assert_eq!(AccessState::parse(s.name()), Some(s));
            assert_eq!(s.admit(Access::Always), Ok(()));
        }
        for s in [ActiveOptimized, ActiveNonOptimized] {
            assert_eq!(s.admit(Access::Active), Ok(()));
        }
        assert_eq!(Standby.admit(Access::Standby), Ok(()));
        let refused = |s: AccessState| {
            s.admit(Access::Active)
                .err()
                .map(|e| e.fixed()[12..14].to_vec())
        };
        assert_eq!(refused(Standby), Some(vec![0x04, 0x0b]));
        assert_eq!(refused(Unavailable), Some(vec![0x04, 0x0c]));
        assert_eq!(refused(Transitioning), Some(vec![0x04, 0x0a]));
        assert!(Unavailable.admit(Access::Standby).is_err());
        assert_eq!(AccessState::parse("active"), None);
    }
}
