//! What a connection has for the I/O layer: frames ready for the wire (encoded under
//! the framing in force when they were queued) and events (logged in, image bytes
//! wanted, close). Both queues are reused, so the steady state allocates nothing.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::login::LoginOutcome;
use crate::pdu::{Frame, FrameConfig, Header};

/// Image bytes the session needs before it can answer a command.
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
    /// same initiator and ISID) before its final login response goes out.
    LoggedIn(Box<LoginOutcome>),
    /// Read these bytes of a LUN's image and hand them to `Connection::read_done`.
    Read(ReadRequest),
    /// Close the connection: after sending what is queued when `flush` (a logout or
    /// login response is among it), at once otherwise (a peer that stopped
    /// answering gets nothing more).
    Close { reason: String, flush: bool },
}

#[derive(Debug)]
pub struct Outbox {
    pub frames: VecDeque<Frame>,
    pub events: VecDeque<Event>,
    /// Framing of frames queued from now on.
    pub framing: FrameConfig,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            frames: VecDeque::new(),
            events: VecDeque::new(),
            framing: FrameConfig::LOGIN,
        }
    }
}

impl Outbox {
    pub fn push(&mut self, header: &Header, data: Bytes) {
        self.frames
            .push_back(Frame::new(header, data, &self.framing));
    }

    pub fn read(&mut self, r: ReadRequest) {
        self.events.push_back(Event::Read(r));
    }

    /// Send what is queued, then close.
    pub fn close(&mut self, reason: impl Into<String>) {
        self.events.push_back(Event::Close {
            reason: reason.into(),
            flush: true,
        });
    }

    /// Close without waiting for what is queued to be written.
    pub fn abort(&mut self, reason: impl Into<String>) {
        self.events.push_back(Event::Close {
            reason: reason.into(),
            flush: false,
        });
    }
}
