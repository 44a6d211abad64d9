//! An in-memory initiator wired to a target [`Connection`], with simulated time, as
//! quinn-proto's `Pair`: the initiator's PDUs go through the same byte path as a
//! socket's (encode, `handle_input`), whatever the target transmits is decoded back,
//! reads are answered from an in-memory image, and time moves only when a test says
//! so. The session unit tests, the `hot_core` bench and the `session` fuzz target all
//! drive the target through it or through the same calls.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::login::{encode_pairs, LoginEnv, LoginOutcome, LoginSettings};
use crate::lun_table::LunTable;
use crate::pdu::framing::encode_to_vec;
use crate::pdu::ScsiStatus;
use crate::pdu::{decode, FrameConfig, Header, LoginRequest, Pdu, ScsiCommand};
use crate::scsi::Sense;
use crate::scsi::TargetPort;
use crate::session::{Connection, ConnectionConfig, Event, ReadRequest, SessionSettings};

pub const TARGET: &str = "iqn.2023-06.example:pair";
pub const INITIATOR: &str = "iqn.2023-06.example:initiator";

/// TSIHs from a counter; no other sessions exist.
#[derive(Debug, Default)]
pub struct NoRegistry {
    next: std::cell::Cell<u16>,
}

impl LoginEnv for NoRegistry {
    fn new_tsih(&self) -> u16 {
        self.next.set(self.next.get().wrapping_add(1).max(1));
        self.next.get()
    }
    fn session_exists(&self, _tsih: u16) -> bool {
        false
    }
}

/// How the pair answers `Read` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// From the image, at once (a cache hit).
    Immediate,
    /// Kept in [`Pair::reads`] until the test completes them (S3 still fetching).
    Held,
}

#[derive(Debug)]
pub struct Pair {
    pub conn: Connection,
    pub image: Bytes,
    pub now: Instant,
    pub reads: Vec<ReadRequest>,
    pub read_mode: Reads,
    /// PDUs the target sent, decoded, oldest first.
    pub received: VecDeque<Pdu>,
    pub logged_in: Option<Box<LoginOutcome>>,
    /// Why the target closed the connection, and whether it flushed first.
    pub closed: Option<(String, bool)>,
    pub env: NoRegistry,
    /// Framing of both directions as the initiator sees it.
    framing: FrameConfig,
    inbound: BytesMut,
    outbound: BytesMut,
    pub cmd_sn: u32,
    pub next_itt: u32,
}

impl Pair {
    /// A target presenting `image` as LUN 0, not yet logged in to.
    pub fn new(settings: SessionSettings, image: Bytes) -> Pair {
        let now = Instant::now();
        let config = ConnectionConfig {
            login: Arc::new(LoginSettings::new(TARGET)),
            session: Arc::new(settings),
            port: Arc::new(TargetPort::new(TARGET, 1)),
            portals: Arc::new(vec!["127.0.0.1:3260,1".into()]),
        };
        let luns = Arc::new(LunTable::single(image.len() as u64, "pair"));
        Pair {
            conn: Connection::new(config, luns, now),
            image,
            now,
            reads: Vec::new(),
            read_mode: Reads::Immediate,
            received: VecDeque::new(),
            logged_in: None,
            closed: None,
            env: NoRegistry::default(),
            framing: FrameConfig::LOGIN,
            inbound: BytesMut::new(),
            outbound: BytesMut::new(),
            cmd_sn: 1,
            next_itt: 1,
        }
    }

    /// A normal session on a fresh target, logged in with `keys` added to the
    /// operational ones, with the power-on unit attention already taken.
    pub fn logged_in(settings: SessionSettings, image: Bytes, keys: &[(&str, &str)]) -> Pair {
        let mut p = Pair::new(settings, image);
        p.login(keys);
        assert!(p.logged_in.is_some(), "login failed: {:?}", p.received);
        let itt = p.command(false, [0; 16], 0);
        p.status_of(itt);
        p
    }

    /// One login request straight to full feature phase, no security stage; keys
    /// in `extra` replace the defaults of the same name.
    pub fn login(&mut self, extra: &[(&str, &str)]) {
        let mut keys: Vec<(&str, &str)> = vec![
            ("InitiatorName", INITIATOR),
            ("SessionType", "Normal"),
            ("TargetName", TARGET),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
        ];
        keys.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        keys.extend_from_slice(extra);
        let mut data = Vec::new();
        encode_pairs(&keys, &mut data);
        let itt = self.itt();
        let h = Header::LoginRequest(LoginRequest::to_full_feature(
            [0x80, 0, 0, 0, 0, 1],
            itt,
            self.cmd_sn,
            0,
        ));
        self.send(&h, &data);
    }

    /// Framing of both directions as the initiator sees it (digests after login).
    pub fn framing(&self) -> FrameConfig {
        self.framing
    }

    pub fn itt(&mut self) -> u32 {
        let i = self.next_itt;
        self.next_itt += 1;
        i
    }

    /// Send one PDU as bytes, let the target act on it, collect what it sends.
    pub fn send(&mut self, h: &Header, data: &[u8]) {
        self.outbound
            .extend_from_slice(&encode_to_vec(h, data, &self.framing));
        self.conn
            .handle_input(&mut self.outbound, &self.env, self.now);
        self.pump();
    }

    /// Raw bytes from the initiator (possibly a partial or broken PDU).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.outbound.extend_from_slice(bytes);
        self.conn
            .handle_input(&mut self.outbound, &self.env, self.now);
        self.pump();
    }

    /// A SCSI command with the next ITT and (unless immediate) the next CmdSN.
    pub fn command(&mut self, immediate: bool, cdb: [u8; 16], edtl: u32) -> u32 {
        self.command_lun(0, immediate, cdb, edtl)
    }

    /// A command to LUN `lun` (flat addressing above 255, as the target reports).
    pub fn command_lun(&mut self, lun: u64, immediate: bool, cdb: [u8; 16], edtl: u32) -> u32 {
        let itt = self.itt();
        let mut h = self.scsi_header(immediate, itt, cdb, edtl);
        if let Header::ScsiCommand(c) = &mut h {
            c.lun = crate::scsi::logical_unit::encode_lun(lun);
        }
        self.send(&h, &[]);
        itt
    }

    pub fn scsi_header(&mut self, immediate: bool, itt: u32, cdb: [u8; 16], edtl: u32) -> Header {
        let cmd_sn = self.cmd_sn;
        if !immediate {
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
        }
        Header::ScsiCommand(ScsiCommand {
            immediate,
            final_: true,
            read: matches!(cdb[0], 0x08 | 0x28 | 0x88 | 0x12 | 0x25 | 0x9e | 0xa0),
            write: matches!(cdb[0], 0x2f | 0x8f | 0x2a),
            attr: 1,
            lun: 0,
            itt,
            expected_len: edtl,
            cmd_sn,
            exp_stat_sn: 0,
            cdb,
        })
    }

    /// Move the clock on and run whatever timers are due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        while let Some(t) = self.conn.poll_timeout() {
            if t > self.now {
                break;
            }
            self.conn.handle_timeout(self.now);
            self.pump();
            if self.conn.poll_timeout() == Some(t) {
                break;
            }
        }
    }

    /// Complete the held read of `itt` with the image bytes or `sense`.
    pub fn complete_read(&mut self, itt: u32, sense: Option<Sense>) {
        let Some(i) = self.reads.iter().position(|r| r.itt == itt) else {
            panic!("no read held for ITT {itt}");
        };
        let r = self.reads.remove(i);
        let result = match sense {
            Some(s) => Err(s),
            None => Ok(self.bytes_of(&r)),
        };
        self.conn.read_done(itt, result);
        self.pump();
    }

    fn bytes_of(&self, r: &ReadRequest) -> Bytes {
        let start = (r.offset as usize).min(self.image.len());
        let end = (r.offset + r.len).min(self.image.len() as u64) as usize;
        self.image.slice(start..end)
    }

    /// Act on the target's events as the I/O layer does (events before frames),
    /// and decode every frame it transmits.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.conn.poll_event() {
                progressed = true;
                match ev {
                    Event::LoggedIn(o) => self.logged_in = Some(o),
                    Event::Read(r) => match self.read_mode {
                        Reads::Immediate => {
                            let data = self.bytes_of(&r);
                            self.conn.read_done(r.itt, Ok(data));
                        }
                        Reads::Held => self.reads.push(r),
                    },
                    Event::Close { reason, flush } => {
                        self.closed.get_or_insert((reason, flush));
                    }
                }
            }
            while let Some(f) = self.conn.poll_transmit() {
                progressed = true;
                self.inbound.extend_from_slice(f.head());
                self.inbound.extend_from_slice(&f.data);
                self.inbound.extend_from_slice(f.tail());
            }
            if !progressed {
                break;
            }
        }
        loop {
            match decode(&mut self.inbound, &self.framing) {
                Ok(Some(pdu)) => {
                    if let Header::LoginResponse(r) = &pdu.header {
                        if r.transit && r.nsg == 3 && r.status_class == 0 {
                            // Digests apply after the final login response.
                            if let Some(o) = &self.logged_in {
                                self.framing = FrameConfig {
                                    header_digest: o.params.header_digest,
                                    data_digest: o.params.data_digest,
                                    max_data_segment: o.params.initiator_max_recv_data_segment,
                                };
                            }
                        }
                    }
                    self.received.push_back(pdu);
                }
                Ok(None) => break,
                Err(e) => panic!("the target sent a PDU the initiator cannot decode: {e}"),
            }
        }
    }

    /// Take every PDU received so far.
    pub fn take(&mut self) -> Vec<Pdu> {
        self.received.drain(..).collect()
    }

    /// The SCSI status (and sense key / ASC / ASCQ) that ended `itt`, taking every
    /// PDU received before it; panics if none came.
    pub fn status_of(&mut self, itt: u32) -> (ScsiStatus, Option<(u8, u8, u8)>) {
        while let Some(p) = self.received.pop_front() {
            match &p.header {
                Header::ScsiResponse(r) if r.itt == itt => {
                    let sense =
                        (p.data.len() >= 16).then(|| (p.data[4] & 0x0f, p.data[14], p.data[15]));
                    return (r.status, sense);
                }
                Header::DataIn(d) if d.itt == itt && d.status.is_some() => {
                    return (d.status.unwrap_or_default(), None);
                }
                _ => {}
            }
        }
        panic!("no status for ITT {itt}");
    }
}

/// READ(10) of `blocks` blocks at `lba`.
pub fn read10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// VERIFY(10) with BYTCHK of `blocks` blocks at LBA 0.
pub fn verify10(blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x2f;
    c[1] = 0x02;
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A simulated second, for readability at call sites.
pub const SECOND: Duration = Duration::from_secs(1);
