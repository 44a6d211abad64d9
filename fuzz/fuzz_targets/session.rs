//! The whole connection state machine (login, then full feature phase) fed an
//! arbitrary initiator byte stream, exactly as the tokio layer feeds it: framing
//! switches to the negotiated digests after login, reads complete at once from an
//! in-memory image, the clock ticks between PDUs. Everything the target sends must
//! itself be a valid PDU.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use s3lun::login::LoginSettings;
use s3lun::lun::LunTable;
use s3lun::pdu::framing::parse_frame;
use s3lun::pdu::{decode, FrameConfig, BHS_LEN};
use s3lun::scsi::exec::TargetPort;
use s3lun::server::Registry;
use s3lun::session::{Connection, Event, FfpSettings, Outbox};
use s3lun::store::{read_padded, BlockStore, MemStore, ReadFuture};

/// The name the protocol tests (and so the captured seeds) log in to.
const TARGET: &str = "iqn.2023-06.csm.iscsi:s3lun-test";

fn check_sent(out: &mut Outbox) {
    let plain = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: 16_777_215,
    };
    for f in out.frames.drain(..) {
        let mut wire = f.bhs.to_vec();
        wire.extend_from_slice(&f.data);
        wire.resize(wire.len().div_ceil(4) * 4, 0);
        if let Err(e) = parse_frame(Bytes::from(wire), &plain) {
            panic!("the target sent a PDU it cannot parse: {e}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let store: Arc<dyn BlockStore> = Arc::new(MemStore(Bytes::from(vec![0x5a; 1 << 16])));
    let luns = Arc::new(LunTable::single(Arc::clone(&store), "fuzz"));
    let port = Arc::new(TargetPort::new(TARGET, 1));
    let mut conn = Connection::new(
        Arc::new(LoginSettings::new(TARGET)),
        Arc::new(FfpSettings::default()),
        luns,
        port,
        Arc::new(vec!["127.0.0.1:3260,1".into()]),
    );
    let registry = Registry::default();
    let mut cfg = FrameConfig::LOGIN;
    let mut rbuf = BytesMut::from(data);
    let mut out = Outbox::default();
    let mut now = Instant::now();
    loop {
        let before = rbuf.len();
        let raw: Option<[u8; BHS_LEN]> = rbuf.get(..BHS_LEN).and_then(|b| b.try_into().ok());
        match decode(&mut rbuf, &cfg) {
            Ok(Some(pdu)) => conn.handle(pdu, &registry, now, &mut out),
            Ok(None) => break,
            Err(e) => conn.pdu_error(&e, raw, &mut out),
        }
        let mut closed = false;
        while !out.reads.is_empty() || !out.events.is_empty() {
            for ev in std::mem::take(&mut out.events) {
                match ev {
                    Event::LoggedIn(o) => {
                        cfg = FrameConfig {
                            header_digest: o.params.header_digest,
                            data_digest: o.params.data_digest,
                            max_data_segment: o.params.target_max_recv_data_segment,
                        };
                    }
                    Event::Close { .. } => closed = true,
                }
            }
            for r in std::mem::take(&mut out.reads) {
                let res = match read_padded(&*store, r.offset, r.len as usize) {
                    ReadFuture::Ready(res) => res,
                    ReadFuture::Pending(_) => unreachable!("memory reads are ready"),
                };
                conn.read_done(r.itt, res, &mut out);
            }
        }
        check_sent(&mut out);
        if closed || rbuf.len() == before {
            break;
        }
        now += Duration::from_millis(700);
        conn.tick(now, &mut out);
        check_sent(&mut out);
    }
    now += Duration::from_secs(30);
    conn.tick(now, &mut out);
    check_sent(&mut out);
    conn.end();
});
