//! The whole connection state machine (login, then full feature phase) fed an
//! arbitrary initiator byte stream, exactly as the tokio layer feeds it: framing
//! switches to the negotiated digests after login, reads complete at once from an
//! in-memory image, the clock ticks between PDUs. Everything the target sends must
//! itself be a valid PDU.
//!
//! Three sessions take the same stream, a PDU each in turn, and share one small
//! target-wide buffer budget: after every step each session's budget charge equals
//! what it actually buffers and stays under its limit, and the sessions together
//! stay under the target's.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use s3lun::login::{LoginEnv, LoginSettings};
use s3lun::lun::LunTable;
use s3lun::pdu::framing::frame_len;
use s3lun::pdu::{decode, FrameConfig, Header, BHS_LEN};
use s3lun::scsi::exec::TargetPort;
use s3lun::session::budget::TargetBudget;
use s3lun::session::{Connection, Event, FfpSettings, Outbox};
use s3lun::store::{read_padded, BlockStore, MemStore, ReadFuture};

/// The name the protocol tests (and so the captured seeds) log in to.
const TARGET: &str = "iqn.2023-06.csm.iscsi:s3lun-test";
const SESSIONS: usize = 3;

struct Env;
impl LoginEnv for Env {
    fn new_tsih(&self) -> u16 {
        1
    }
    fn session_exists(&self, _tsih: u16) -> bool {
        false
    }
}

/// Every frame the target queued must be a PDU it could parse itself: a valid BHS
/// whose lengths describe the data that follows (checked on the header alone: the
/// data segment is opaque to framing, and copying megabytes of Data-In per input
/// would only slow the fuzzer down).
fn check_sent(out: &mut Outbox) {
    let plain = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: 16_777_215,
    };
    for f in out.frames.drain(..) {
        let want = BHS_LEN + f.data.len().div_ceil(4) * 4;
        match frame_len(&f.bhs, &plain) {
            Ok(Some(n)) if n == want => {}
            other => panic!("the target sent a frame whose lengths are wrong: {other:?}"),
        }
        if let Err(e) = Header::parse(&f.bhs) {
            panic!("the target sent a PDU it cannot parse: {e}");
        }
    }
}

struct Side {
    conn: Connection,
    cfg: FrameConfig,
    rbuf: BytesMut,
    out: Outbox,
    closed: bool,
}

fn check_budgets(sides: &[Side], target: &TargetBudget) {
    let mut total = 0;
    for s in sides {
        if let Some(f) = s.conn.full_feature() {
            let (used, limit) = f.budget();
            assert!(used <= limit, "session budget exceeded: {used} > {limit}");
            assert_eq!(used, f.buffered_bytes(), "budget charge differs from buffers");
            total += used;
        }
    }
    assert!(target.used() <= target.limit(), "target budget exceeded");
    assert_eq!(total, target.used(), "target budget differs from its sessions");
}

fuzz_target!(|data: &[u8]| {
    let store: Arc<dyn BlockStore> = Arc::new(MemStore(Bytes::from(vec![0x5a; 1 << 16])));
    let luns = Arc::new(LunTable::single(Arc::clone(&store), "fuzz"));
    let port = Arc::new(TargetPort::new(TARGET, 1));
    let target = TargetBudget::new(96 << 10);
    let ffp = Arc::new(FfpSettings {
        session_buffer_bytes: 64 << 10,
        target_budget: Arc::clone(&target),
        ..FfpSettings::default()
    });
    let login = Arc::new(LoginSettings::new(TARGET));
    let mut sides: Vec<Side> = (0..SESSIONS)
        .map(|_| Side {
            conn: Connection::new(
                Arc::clone(&login),
                Arc::clone(&ffp),
                Arc::clone(&luns),
                Arc::clone(&port),
                Arc::new(vec!["127.0.0.1:3260,1".into()]),
            ),
            cfg: FrameConfig::LOGIN,
            rbuf: BytesMut::from(data),
            out: Outbox::default(),
            closed: false,
        })
        .collect();
    let mut now = Instant::now();
    loop {
        let mut progressed = false;
        for side in sides.iter_mut().filter(|s| !s.closed) {
            let before = side.rbuf.len();
            let raw: Option<[u8; BHS_LEN]> =
                side.rbuf.get(..BHS_LEN).and_then(|b| b.try_into().ok());
            match decode(&mut side.rbuf, &side.cfg) {
                Ok(Some(pdu)) => side.conn.handle(pdu, &Env, now, &mut side.out),
                Ok(None) => {}
                Err(e) => side.conn.pdu_error(&e, raw, now, &mut side.out),
            }
            let out = &mut side.out;
            while !out.reads.is_empty() || !out.events.is_empty() {
                for ev in std::mem::take(&mut out.events) {
                    match ev {
                        Event::LoggedIn(o) => {
                            side.cfg = FrameConfig {
                                header_digest: o.params.header_digest,
                                data_digest: o.params.data_digest,
                                max_data_segment: o.params.target_max_recv_data_segment,
                            };
                        }
                        Event::Close { .. } => side.closed = true,
                    }
                }
                for r in std::mem::take(&mut out.reads) {
                    let res = match read_padded(&*store, r.offset, r.len as usize) {
                        ReadFuture::Ready(res) => res,
                        ReadFuture::Pending(_) => unreachable!("memory reads are ready"),
                    };
                    side.conn.read_done(r.itt, res, out);
                }
            }
            check_sent(out);
            progressed |= side.rbuf.len() != before && !side.closed;
        }
        check_budgets(&sides, &target);
        if !progressed {
            break;
        }
        now += Duration::from_millis(700);
        for side in &mut sides {
            side.conn.tick(now, &mut side.out);
            check_sent(&mut side.out);
        }
    }
    now += Duration::from_secs(30);
    for side in &mut sides {
        side.conn.tick(now, &mut side.out);
        check_sent(&mut side.out);
        side.conn.end();
    }
    drop(sides);
    assert_eq!(target.used(), 0, "ended sessions gave their budget back");
});
