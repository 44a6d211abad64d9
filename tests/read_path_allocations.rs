//! The read path allocates nothing per PDU once warm: decoding a SCSI READ, running
//! it, slicing the image, building the Data-In PDUs and writing them out with
//! vectored writes. A counting global allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use s3lun::pair::Pair;
use s3lun::pdu::Frame;
use s3lun::pdu::{Header, ScsiCommand};
use s3lun::server::wire::write_frames;
use s3lun::session::{Event, SessionSettings};
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

#[test]
fn a_warm_read_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    std::fs::write(&path, vec![7u8; 8 << 20]).unwrap();
    let store: Arc<dyn BlockStore> = Arc::new(LocalFile::open(&path).unwrap());
    // A real login over the connection's byte path, digests on.
    let mut pair = Pair::logged_in(
        SessionSettings::default(),
        Bytes::from(vec![7u8; 8 << 20]),
        &[
            ("HeaderDigest", "CRC32C"),
            ("DataDigest", "CRC32C"),
            ("MaxRecvDataSegmentLength", "262144"),
        ],
    );
    let cfg = pair.framing();
    assert!(cfg.header_digest && cfg.data_digest);
    let n = 300u32;
    let commands: Vec<Frame> = (0..n)
        .map(|i| {
            let sn = pair.cmd_sn.wrapping_add(i);
            let h = Header::ScsiCommand(ScsiCommand::read10(1000 + i, sn, (i % 64) * 256, 256));
            Frame::new(&h, Bytes::new(), &cfg)
        })
        .collect();
    let env = std::mem::take(&mut pair.env);
    let conn = &mut pair.conn;
    let mut rx = BytesMut::with_capacity(4096);
    let mut frames = std::collections::VecDeque::new();
    let mut sink = tokio::io::sink();
    let mut next = commands.iter();
    let mut run = |rx: &mut BytesMut, count: u32| {
        for f in next.by_ref().take(count as usize) {
            rx.extend_from_slice(f.head());
            conn.handle_input(rx, &env, Instant::now());
            while let Some(ev) = conn.poll_event() {
                let Event::Read(r) = ev else {
                    panic!("unexpected {ev:?}")
                };
                match read_padded(&*store, r.offset, r.len as usize) {
                    ReadFuture::Ready(res) => conn.read_done(r.itt, res.map_err(|e| e.sense())),
                    ReadFuture::Pending(_) => panic!("local reads are ready at once"),
                }
            }
            conn.drain_transmits(&mut frames);
            futures::executor::block_on(write_frames(&mut sink, &mut frames)).unwrap();
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
    run(&mut rx, 100);
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run(&mut rx, n - 100);
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.load(Ordering::SeqCst);
    println!(
        "{allocs} allocations for {} 128 KiB READs (digests on)",
        n - 100
    );
    assert_eq!(allocs, 0, "the warm read path allocated");
}
