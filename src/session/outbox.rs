//! What the connection state machine asks the I/O layer to do.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::login::LoginOutcome;
use crate::pdu::{Header, BHS_LEN};

/// One PDU ready for the wire, minus digests and padding, which the writer adds.
#[derive(Debug, Clone)]
pub struct Frame {
    pub bhs: [u8; BHS_LEN],
    pub data: Bytes,
}

impl Frame {
    pub fn new(header: &Header, data: Bytes) -> Frame {
        let mut bhs = [0u8; BHS_LEN];
        header.encode(0, data.len() as u32, &mut bhs);
        Frame { bhs, data }
    }
}

/// Image bytes the session needs before it can answer a READ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub itt: u32,
    pub lun: u64,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug)]
pub enum Event {
    /// Login succeeded: register the session (reinstating an older one with the
    /// same initiator and ISID) and switch framing to the negotiated digests.
    LoggedIn(Box<LoginOutcome>),
    /// Close the connection: after sending what is queued when `flush` (a logout or
    /// login response is among it), at once otherwise (a peer that stopped
    /// answering gets nothing more).
    Close { reason: String, flush: bool },
}

/// Reused across PDUs so the steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Outbox {
    pub frames: VecDeque<Frame>,
    pub reads: Vec<ReadRequest>,
    pub events: Vec<Event>,
}

impl Outbox {
    pub fn push(&mut self, header: &Header, data: Bytes) {
        self.frames.push_back(Frame::new(header, data));
    }

    /// Send what is queued, then close.
    pub fn close(&mut self, reason: impl Into<String>) {
        self.events.push(Event::Close {
            reason: reason.into(),
            flush: true,
        });
    }

    /// Close without waiting for what is queued to be written.
    pub fn abort(&mut self, reason: impl Into<String>) {
        self.events.push(Event::Close {
            reason: reason.into(),
            flush: false,
        });
    }

    pub fn closing(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Close { .. }))
    }
}
