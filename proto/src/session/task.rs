//! What a session keeps per command: the one task map (every command between its
//! arrival and its answer, whatever it waits for), commands held for a CmdSN gap,
//! and the residual arithmetic of SCSI Responses.

use crate::pdu::{Pdu, BHS_LEN};
use crate::scsi::Outcome;

/// A command the session has accepted and not yet answered.
#[derive(Debug)]
pub struct Task {
    pub lun: u64,
    pub edtl: u32,
    /// Sent with the I bit: outside the CmdSN window, so bounded separately.
    pub immediate: bool,
    /// Bytes of the session budget this task holds (its VERIFY buffer).
    pub charge: usize,
    pub state: State,
}

#[derive(Debug)]
pub enum State {
    /// Waiting for image bytes: a READ, or a VERIFY comparing against `compare`
    /// (the initiator's data, one block repeated when the flag is set).
    Reading { compare: Option<(Vec<u8>, bool)> },
    /// VERIFY with BYTCHK soliciting its Data-Out with R2Ts.
    Collecting(Collect),
    /// Its unsolicited Data-Out is swallowed; then `Outcome` is the answer.
    Draining(Outcome),
}

/// A VERIFY's data as it arrives.
#[derive(Debug)]
pub struct Collect {
    pub buf: Vec<u8>,
    pub received: usize,
    pub offset: u64,
    pub len: u64,
    pub pattern: bool,
    pub r2t_sn: u32,
    /// A Data-Out of this task failed its data digest: under ErrorRecoveryLevel 0 the
    /// task ends in CHECK CONDITION once its data is in (RFC 7143 section 7.8).
    pub crc_failed: bool,
}

/// A PDU that arrived ahead of ExpCmdSN, waiting for the gap to fill.
#[derive(Debug)]
pub enum Held {
    Pdu(Pdu),
    /// A command whose immediate data failed its digest: still a command.
    DataLost(Pdu),
    /// Aborted before it ran (or never received and aborted): its CmdSN counts as
    /// received, so the commands after it still run.
    Aborted,
}

impl Held {
    /// The PDU, where one is held.
    pub fn pdu(&self) -> Option<&Pdu> {
        match self {
            Held::Pdu(p) | Held::DataLost(p) => Some(p),
            Held::Aborted => None,
        }
    }

    /// Budget bytes: what holding it keeps alive.
    pub fn bytes(&self) -> usize {
        self.pdu()
            .map_or(0, |p| BHS_LEN + p.ahs.len() + p.data.len())
    }

    pub fn itt(&self) -> Option<u32> {
        self.pdu().and_then(|p| p.header.itt())
    }

    pub fn lun(&self) -> Option<u64> {
        match &self.pdu()?.header {
            crate::pdu::Header::ScsiCommand(c) => {
                Some(crate::scsi::logical_unit::decode_lun(c.lun))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Residual {
    pub underflow: bool,
    pub overflow: bool,
    pub count: u32,
}

impl Residual {
    pub fn of(expected: u32, actual: u64) -> Residual {
        let e = expected as u64;
        if actual < e {
            Residual {
                underflow: true,
                overflow: false,
                count: (e - actual) as u32,
            }
        } else if actual > e {
            Residual {
                underflow: false,
                overflow: true,
                count: u32::try_from(actual - e).unwrap_or(u32::MAX),
            }
        } else {
            Residual::default()
        }
    }
}
