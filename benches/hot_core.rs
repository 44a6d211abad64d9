//! Criterion benchmarks of the hot core: PDU parse and encode, login text parsing,
//! Data-In generation for a cache hit (digests off and on), cache lookups, and the
//! per-chunk cost of the chunk digest index against the cache's CRC32C.
//! Run with `cargo bench --bench hot_core`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use s3lun::login::{encode_pairs, parse_pairs};
use s3lun::pair::Pair;
use s3lun::pdu::framing::encode_to_vec;
use s3lun::pdu::*;
use s3lun::server::wire::write_frames;
use s3lun::session::{Event, SessionSettings};
use s3lun::store::cache::{CacheSettings, CachedStore, ChunkCache};
use s3lun::store::{BlockStore, LocalFile};

fn scsi_read() -> Header {
    Header::ScsiCommand(ScsiCommand::read10(1, 1, 0, 8))
}

fn pdus(c: &mut Criterion) {
    let mut g = c.benchmark_group("pdu");
    g.throughput(Throughput::Elements(1));
    for (name, digests) in [("plain", false), ("crc32c", true)] {
        let cfg = FrameConfig {
            header_digest: digests,
            data_digest: digests,
            max_data_segment: 262_144,
        };
        let cmd = Bytes::from(encode_to_vec(&scsi_read(), &[], &cfg));
        g.bench_function(format!("parse_scsi_command_{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&cmd[..]),
                |mut buf| black_box(decode(&mut buf, &cfg).ok()),
                BatchSize::SmallInput,
            )
        });
        let nop = Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 9,
            ttt: RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 1,
        });
        let nop = Bytes::from(encode_to_vec(&nop, b"ping", &cfg));
        g.bench_function(format!("parse_nop_out_{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&nop[..]),
                |mut buf| black_box(decode(&mut buf, &cfg).ok()),
                BatchSize::SmallInput,
            )
        });
    }
    let data_in = Header::DataIn(DataIn {
        final_: true,
        status: Some(ScsiStatus::Good),
        itt: 7,
        ttt: RESERVED_TAG,
        data_sn: 3,
        buffer_offset: 65536,
        ..DataIn::default()
    });
    g.bench_function("encode_data_in", |b| {
        let mut bhs = [0u8; BHS_LEN];
        b.iter(|| {
            black_box(&data_in).encode(0, 65536, &mut bhs);
            black_box(bhs[1])
        })
    });
    g.bench_function("encode_scsi_command", |b| {
        let h = scsi_read();
        let mut bhs = [0u8; BHS_LEN];
        b.iter(|| {
            black_box(&h).encode(0, 0, &mut bhs);
            black_box(bhs[1])
        })
    });
    g.finish();
}

fn login_text(c: &mut Criterion) {
    let mut text = Vec::new();
    encode_pairs(
        &[
            ("InitiatorName", "iqn.2004-10.com.ubuntu:01:2bd7e1f3c6a0"),
            ("SessionType", "Normal"),
            ("TargetName", "iqn.2023-06.csm.iscsi:ncn-w001"),
            ("HeaderDigest", "None,CRC32C"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "No"),
            ("ErrorRecoveryLevel", "0"),
        ],
        &mut text,
    );
    c.bench_function("login_text_parse", |b| {
        b.iter(|| black_box(parse_pairs(black_box(&text), 64).ok()))
    });
}

/// One 128 KiB READ through the connection machine exactly as the server drives it:
/// command bytes in (decoded, header digest checked), the read answered from a
/// cached payload, Data-In frames out (digests computed) and written vectored.
fn data_in(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![7u8; 4 << 20]).expect("image");
    let store: Arc<dyn BlockStore> = Arc::new(LocalFile::open(&path).expect("open"));
    let image = store.read_at(0, 128 << 10);
    let payload = futures::executor::block_on(image.wait()).expect("read");
    let mut g = c.benchmark_group("data_in_cache_hit_128k");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    for (name, digests) in [("digests_off", "None"), ("digests_on", "CRC32C")] {
        let mut pair = Pair::logged_in(
            SessionSettings::default(),
            Bytes::from(vec![7u8; 4 << 20]),
            &[
                ("HeaderDigest", digests),
                ("DataDigest", digests),
                ("MaxRecvDataSegmentLength", "65536"),
            ],
        );
        let cfg = pair.framing();
        let env = std::mem::take(&mut pair.env);
        let conn = &mut pair.conn;
        let mut rx = BytesMut::with_capacity(4096);
        let mut frames = VecDeque::new();
        let mut sink = tokio::io::sink();
        let mut itt = 1000u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                itt = itt.wrapping_add(1);
                let mut read = ScsiCommand::read10(itt, 0, 0, 256);
                read.immediate = true;
                let cmd = Frame::new(&Header::ScsiCommand(read), Bytes::new(), &cfg);
                rx.extend_from_slice(cmd.head());
                conn.handle_input(&mut rx, &env, Instant::now());
                while let Some(ev) = conn.poll_event() {
                    if let Event::Read(r) = ev {
                        conn.read_done(r.itt, Ok(payload.clone()));
                    }
                }
                conn.drain_transmits(&mut frames);
                futures::executor::block_on(write_frames(&mut sink, &mut frames)).expect("write");
            })
        });
    }
    g.finish();
}

fn cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("img");
    std::fs::write(&path, vec![3u8; 16 << 20]).expect("image");
    let inner: Arc<dyn BlockStore> = Arc::new(LocalFile::open(&path).expect("open"));
    let cache = ChunkCache::new(
        CacheSettings {
            dir: None,
            memory_bytes: 64 << 20,
            chunk_size: 1 << 20,
            readahead: 0,
            ..CacheSettings::default()
        },
        rt.handle().clone(),
    );
    let store = Arc::new(CachedStore::new(inner.clone(), "bench", cache.clone()));
    rt.block_on(async { store.read_at(0, 16 << 20).wait().await.expect("fill") });
    let mut g = c.benchmark_group("cache");
    g.throughput(Throughput::Elements(1));
    g.bench_function("memory_hit_4k", |b| {
        let mut off = 0u64;
        b.iter(|| {
            off = (off + 4096) % (16 << 20);
            black_box(store.read_at(off, 4096))
        })
    });
    // 16 concurrent readers of the same cold chunk: one fill, shared by all.
    g.bench_function("single_flight_16_readers", |b| {
        b.iter_batched(
            || {
                let cache = ChunkCache::new(
                    CacheSettings {
                        dir: None,
                        chunk_size: 1 << 20,
                        readahead: 0,
                        ..CacheSettings::default()
                    },
                    rt.handle().clone(),
                );
                Arc::new(CachedStore::new(inner.clone(), "cold", cache))
            },
            |store| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..16)
                        .map(|_| {
                            let s = Arc::clone(&store);
                            tokio::spawn(async move {
                                s.read_at(4096, 4096).wait().await.map(|b| b.len())
                            })
                        })
                        .collect();
                    for t in tasks {
                        black_box(t.await.ok());
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// What the chunk digest index costs per chunk fetched from S3 (SHA-256 of a 4 MiB
/// cache chunk, as four 1 MiB index chunks), beside the CRC32C every chunk read from
/// disk already pays.
fn chunk_checks(c: &mut Criterion) {
    use s3lun::store::index::IndexBuilder;
    let chunk: Vec<u8> = (0..4usize << 20).map(|i| (i * 131 % 253) as u8).collect();
    let mut b = IndexBuilder::new(1 << 20);
    b.update(&chunk);
    let ix = b.finish("etag");
    let mut g = c.benchmark_group("chunk_check");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("index_sha256_4mib", |b| {
        b.iter(|| assert_eq!(ix.check(0, black_box(&chunk)), Ok(true)))
    });
    g.bench_function("crc32c_4mib", |b| {
        b.iter(|| crc32c::crc32c(black_box(&chunk)))
    });
    g.finish();
}

criterion_group!(benches, pdus, login_text, data_in, cache, chunk_checks);
criterion_main!(benches);
