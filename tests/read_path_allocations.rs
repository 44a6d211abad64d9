//! The read path allocates nothing per PDU once warm: decoding a SCSI READ, running
//! it, slicing the image, building the Data-In PDUs and writing them out with
//! vectored writes. A counting global allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use s3lun::login::{LoginOutcome, SessionParams};
use s3lun::lun::LunTable;
use s3lun::pdu::framing::encode_to_vec;
use s3lun::pdu::{decode, FrameConfig, Header, ScsiCommand};
use s3lun::scsi::exec::TargetPort;
use s3lun::server::writer::Writer;
use s3lun::session::{FfpSettings, FullFeature, Outbox};
use s3lun::store::{read_padded, BlockStore, LocalFile, ReadFuture};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn read10(itt: u32, cmd_sn: u32, lba: u32, blocks: u16) -> Vec<u8> {
    let h = Header::ScsiCommand(ScsiCommand::read10(itt, cmd_sn, lba, blocks));
    encode_to_vec(&h, &[], &FrameConfig::LOGIN)
}

#[test]
fn a_warm_read_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    std::fs::write(&path, vec![7u8; 8 << 20]).unwrap();
    let store: Arc<dyn BlockStore> = Arc::new(LocalFile::open(&path).unwrap());
    let luns = Arc::new(LunTable::single(store, "alloc-test"));
    let params = SessionParams {
        initiator_max_recv_data_segment: 262_144,
        ..SessionParams::default()
    };
    let port = Arc::new(TargetPort::new("iqn.test", 1));
    let mut ffp = FullFeature::new(
        Arc::new(FfpSettings::default()),
        &LoginOutcome {
            params,
            isid: [0; 6],
            tsih: 1,
            cid: 0,
            exp_cmd_sn: 0,
            next_stat_sn: 0,
            target_visible: true,
        },
        luns.clone(),
        port,
        Arc::new(Vec::new()),
        Instant::now(),
    );
    let cfg = FrameConfig {
        header_digest: true,
        data_digest: true,
        max_data_segment: 262_144,
    };
    let n = 300u32;
    let mut wire = Vec::new();
    for i in 0..n {
        wire.extend(read10(i, i, (i % 64) * 256, 256));
    }
    // Digests are on: re-encode with them.
    let cfg_plain = FrameConfig::LOGIN;
    let mut rx = BytesMut::from(&wire[..]);
    let mut framed = Vec::new();
    while let Some(p) = decode(&mut rx, &cfg_plain).unwrap() {
        framed.extend(encode_to_vec(&p.header, &[], &cfg));
    }
    let mut rx = BytesMut::from(&framed[..]);
    let mut out = Outbox::default();
    let mut writer = Writer::default();
    let mut sink = tokio::io::sink();
    let mut spare = Vec::new();
    let mut run = |rx: &mut BytesMut, out: &mut Outbox, writer: &mut Writer, count: u32| {
        for _ in 0..count {
            let pdu = decode(rx, &cfg).unwrap().unwrap();
            ffp.handle(pdu, Instant::now(), out);
            std::mem::swap(&mut out.reads, &mut spare);
            for r in spare.drain(..) {
                let lun = luns.get(r.lun).unwrap();
                match read_padded(&*lun.store, r.offset, r.len as usize) {
                    ReadFuture::Ready(res) => ffp.read_done(r.itt, res, out),
                    ReadFuture::Pending(_) => panic!("local reads are ready at once"),
                }
            }
            futures::executor::block_on(writer.flush(&mut sink, &mut out.frames, cfg)).unwrap();
        }
    };
    // The counter sees allocations at all.
    COUNTING.store(true, Ordering::SeqCst);
    let probe = std::hint::black_box(vec![0u8; 64]);
    COUNTING.store(false, Ordering::SeqCst);
    assert!(
        ALLOCS.load(Ordering::SeqCst) >= 1,
        "the counting allocator is not in use"
    );
    drop(probe);
    // Warm up: buffers, maps and queues reach their working capacity.
    run(&mut rx, &mut out, &mut writer, 100);
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run(&mut rx, &mut out, &mut writer, n - 100);
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    println!(
        "{allocs} allocations for {} 128 KiB READs (digests on)",
        n - 100
    );
    assert_eq!(allocs, 0, "the warm read path allocated");
}
