//! The one-byte codes PDUs carry, as typed enums with an `Unknown` arm (as rustls
//! keeps its codes): Reject reasons, SCSI status, task management functions and
//! their responses. Each enum's codes are listed once; `From` converts both ways.

macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A code this target has no name for, kept as received.
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(code: u8) -> $name {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(c: $name) -> u8 {
                match c {
                    $($name::$variant => $code,)*
                    $name::Unknown(code) => code,
                }
            }
        }
    };
}

codes! {
    /// Reject reasons (RFC 7143 section 11.17.1).
    RejectReason {
        DataDigestError = 0x02,
        SnackReject = 0x03,
        ProtocolError = 0x04,
        CommandNotSupported = 0x05,
        ImmediateCommandReject = 0x06,
        TaskInProgress = 0x07,
        InvalidPduField = 0x09,
        WaitingForLogout = 0x0c,
    }
}

codes! {
    /// SCSI status (SAM-5 section 5.3).
    #[derive(Default)]
    ScsiStatus {
        #[default]
        Good = 0x00,
        CheckCondition = 0x02,
        ConditionMet = 0x04,
        Busy = 0x08,
        ReservationConflict = 0x18,
        TaskSetFull = 0x28,
    }
}

codes! {
    /// Task management functions (RFC 7143 section 11.5.1).
    TmfFunction {
        AbortTask = 1,
        AbortTaskSet = 2,
        ClearAca = 3,
        ClearTaskSet = 4,
        LogicalUnitReset = 5,
        TargetWarmReset = 6,
        TargetColdReset = 7,
        TaskReassign = 8,
    }
}

codes! {
    /// Task management responses (RFC 7143 section 11.6.1).
    TmfResponse {
        Complete = 0,
        NoSuchTask = 1,
        NoSuchLun = 2,
        ReassignUnsupported = 4,
        NotSupported = 5,
        Rejected = 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(u8::from(RejectReason::from(b)), b);
            assert_eq!(u8::from(ScsiStatus::from(b)), b);
            assert_eq!(u8::from(TmfFunction::from(b)), b);
            assert_eq!(u8::from(TmfResponse::from(b)), b);
        }
        assert_eq!(ScsiStatus::from(0x28), ScsiStatus::TaskSetFull);
        assert_eq!(RejectReason::from(0x01), RejectReason::Unknown(0x01));
    }
}
