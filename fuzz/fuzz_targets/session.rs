//! The whole connection state machine (login, then full feature phase) fed an
//! arbitrary initiator byte stream through the same calls the tokio layer makes:
//! `handle_input` with whatever bytes arrived, events taken before frames, reads
//! completed at once from an in-memory image, timers run when `poll_timeout` says
//! (time moves 700 ms per step). Everything the target transmits must itself be a
//! valid PDU.
//!
//! Three sessions take the same stream in different slice sizes (so PDUs also
//! arrive split across reads) and share one small target-wide buffer budget: after
//! every step each session's budget charge equals what it actually buffers and stays
//! under its limit, and the sessions together stay under the target's.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use s3lun::login::LoginSettings;
use s3lun::lun_table::LunTable;
use s3lun::pair::NoRegistry;
use s3lun::pdu::framing::frame_len;
use s3lun::pdu::{FrameConfig, Header, BHS_LEN};
use s3lun::scsi::TargetPort;
use s3lun::session::budget::TargetBudget;
use s3lun::session::{Connection, ConnectionConfig, Event, SessionSettings};
use s3lun::store::{read_padded, BlockStore, MemStore, ReadFuture};

/// The name the protocol tests (and so the captured seeds) log in to.
const TARGET: &str = "iqn.2023-06.csm.iscsi:s3lun-test";
/// Bytes each session takes from the stream per step.
const SLICES: [usize; 3] = [48, 100, 4096];

/// Every frame the target queued must be a PDU it could parse itself: a valid BHS
/// whose lengths describe the data that follows (checked on the header alone: the
/// data segment is opaque to framing, and copying megabytes of Data-In per input
/// would only slow the fuzzer down).
fn check_sent(side: &mut Side, store: &dyn BlockStore) {
    let plain = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: 16_777_215,
    };
    loop {
        let mut acted = false;
        while let Some(ev) = side.conn.poll_event() {
            acted = true;
            match ev {
                Event::LoggedIn(_) => {}
                Event::Read(r) => {
                    let res = match read_padded(store, r.offset, r.len as usize) {
                        ReadFuture::Ready(res) => res,
                        ReadFuture::Pending(_) => unreachable!("memory reads are ready"),
                    };
                    side.conn.read_done(r.itt, res.map_err(|e| e.sense()));
                }
                Event::Close { .. } => side.closed = true,
            }
        }
        while let Some(f) = side.conn.poll_transmit() {
            acted = true;
            let want = BHS_LEN + f.data.len().div_ceil(4) * 4;
            match frame_len(f.bhs(), &plain) {
                Ok(Some(n)) if n == want => {}
                other => panic!("the target sent a frame whose lengths are wrong: {other:?}"),
            }
            let bhs: &[u8; BHS_LEN] = f.bhs().try_into().expect("a frame starts with a BHS");
            if let Err(e) = Header::parse(bhs) {
                panic!("the target sent a PDU it cannot parse: {e}");
            }
        }
        if !acted {
            break;
        }
    }
}

struct Side {
    conn: Connection,
    stream: Bytes,
    slice: usize,
    rbuf: BytesMut,
    closed: bool,
}

fn check_budgets(sides: &[Side], target: &TargetBudget) {
    let mut total = 0;
    for s in sides {
        if let Some(f) = s.conn.full_feature() {
            let (used, limit) = f.budget();
            assert!(used <= limit, "session budget exceeded: {used} > {limit}");
            assert_eq!(
                used,
                f.buffered_bytes(),
                "budget charge differs from buffers"
            );
            total += used;
        }
    }
    assert!(target.used() <= target.limit(), "target budget exceeded");
    assert_eq!(
        total,
        target.used(),
        "target budget differs from its sessions"
    );
}

fuzz_target!(|data: &[u8]| {
    let store: Arc<dyn BlockStore> = Arc::new(MemStore(Bytes::from(vec![0x5a; 1 << 16])));
    let luns = Arc::new(LunTable::single(store.size(), "fuzz"));
    let target = TargetBudget::new(96 << 10);
    let config = ConnectionConfig {
        login: Arc::new(LoginSettings::new(TARGET)),
        session: Arc::new(SessionSettings {
            session_buffer_bytes: 64 << 10,
            target_budget: Arc::clone(&target),
            ..SessionSettings::default()
        }),
        port: Arc::new(TargetPort::new(TARGET, 1)),
        portals: Arc::new(vec!["127.0.0.1:3260,1".into()]),
    };
    let env = NoRegistry::default();
    let mut now = Instant::now();
    let stream = Bytes::copy_from_slice(data);
    let mut sides: Vec<Side> = SLICES
        .iter()
        .map(|&slice| Side {
            conn: Connection::new(config.clone(), Arc::clone(&luns), now),
            stream: stream.clone(),
            slice,
            rbuf: BytesMut::new(),
            closed: false,
        })
        .collect();
    while sides.iter().any(|s| !s.closed && !s.stream.is_empty()) {
        for side in sides.iter_mut().filter(|s| !s.closed) {
            let n = side.slice.min(side.stream.len());
            let chunk = side.stream.split_to(n);
            side.rbuf.extend_from_slice(&chunk);
            side.conn.handle_input(&mut side.rbuf, &env, now);
            check_sent(side, &*store);
        }
        check_budgets(&sides, &target);
        now += Duration::from_millis(700);
        for side in &mut sides {
            if side.conn.poll_timeout().is_some_and(|t| t <= now) {
                side.conn.handle_timeout(now);
                check_sent(side, &*store);
            }
        }
    }
    now += Duration::from_secs(30);
    for side in &mut sides {
        side.conn.handle_timeout(now);
        check_sent(side, &*store);
        side.conn.end();
    }
    check_budgets(&sides, &target);
    drop(sides);
    assert_eq!(target.used(), 0, "ended sessions gave their budget back");
});
