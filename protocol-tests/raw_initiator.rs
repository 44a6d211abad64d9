//! What the tools don't cover, driven over a raw socket: multi-PDU login, the
//! negotiation rules, bad PDUs of every kind, write attempts, NOP, logout,
//! reinstatement, residuals. After each bad case a fresh session must still work.

mod common;

use common::raw::{get, read10, sense, text, Raw};
use common::{write_image, Server, TARGET};
use s3lun::pdu::*;

const IMG_LEN: usize = 1_000_003;

fn setup(extra: &[&str]) -> (Server, Vec<u8>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (p, data) = write_image(dir.path(), "img", IMG_LEN, 42);
    let mut args = vec!["--lun", p.to_str().unwrap()];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    (Server::start(&argv), data, dir)
}

/// A brand-new session logs in, clears the power-on unit attention and reads.
fn assert_alive(srv: &mut Server, image: &[u8]) {
    assert!(srv.alive(), "s3lun exited");
    let mut r = Raw::connect(srv.port);
    r.isid[5] = 0x77;
    r.name = "iqn.2024-01.test:checker".into();
    r.login_normal(TARGET, &[]);
    r.nop(b"still there?");
    let (_, st, _) = r.command(0, &[0x00], 0);
    assert_eq!(
        st, 2,
        "first TEST UNIT READY reports the power-on unit attention"
    );
    let (data, st, _) = r.command(0, &[0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0], 1024);
    assert_eq!(st, 0);
    assert_eq!(&data[..], &image[2048..3072]);
}

#[test]
fn multi_pdu_login_through_both_stages() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    let all = text(&[
        ("InitiatorName", "iqn.2024-01.test:raw"),
        ("SessionType", "Normal"),
        ("TargetName", TARGET),
        ("AuthMethod", "None"),
    ]);
    let (a, b) = all.split_at(30);
    let h = r.login_req(true, true, 0, 1);
    r.send(&h, a);
    let Some(Pdu {
        header: Header::LoginResponse(resp),
        data,
        ..
    }) = r.recv()
    else {
        panic!("expected a login response")
    };
    assert!(
        !resp.transit && data.is_empty(),
        "C bit answered with an empty response"
    );
    let h = r.login_req(true, false, 0, 1);
    r.send(&h, b);
    let Some(Pdu {
        header: Header::LoginResponse(resp),
        data,
        ..
    }) = r.recv()
    else {
        panic!()
    };
    assert!(resp.transit && resp.csg == 0 && resp.nsg == 1);
    let keys = common::raw::pairs(&data);
    assert_eq!(get(&keys, "AuthMethod"), Some("None"));
    assert_eq!(get(&keys, "TargetPortalGroupTag"), Some("1"));
    let h = r.login_req(true, false, 1, 3);
    r.send(&h, &text(&[("MaxRecvDataSegmentLength", "65536")]));
    let Some(Pdu {
        header: Header::LoginResponse(resp),
        data,
        ..
    }) = r.recv()
    else {
        panic!()
    };
    assert!(resp.transit && resp.nsg == 3 && resp.tsih != 0, "{resp:?}");
    assert_eq!((resp.status_class, resp.status_detail), (0, 0));
    let keys = common::raw::pairs(&data);
    assert_eq!(get(&keys, "MaxRecvDataSegmentLength"), Some("262144"));
    let (_, st, s) = r.command(0, &[0x00], 0);
    assert_eq!(st, 2);
    assert_eq!(sense(&s), (6, 0x29), "POWER ON unit attention first");
    let (_, st, _) = r.command(0, &[0x00], 0);
    assert_eq!(st, 0);
    assert_alive(&mut srv, &image);
}

#[test]
fn every_negotiation_rule() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    let keys = r.login_normal(
        TARGET,
        &[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C"),
            ("MaxConnections", "4"),
            ("InitialR2T", "No"),
            ("ImmediateData", "No"),
            ("MaxRecvDataSegmentLength", "4096"),
            ("MaxBurstLength", "131072"),
            ("FirstBurstLength", "999999"),
            ("DefaultTime2Wait", "0"),
            ("DefaultTime2Retain", "60"),
            ("MaxOutstandingR2T", "8"),
            ("DataPDUInOrder", "No"),
            ("DataSequenceInOrder", "No"),
            ("ErrorRecoveryLevel", "2"),
            ("IFMarker", "Yes"),
            ("X-org.example.Vendor", "1"),
            ("NoSuchKey", "x"),
        ],
    );
    let want = [
        ("HeaderDigest", "CRC32C"),     // list: first acceptable
        ("DataDigest", "CRC32C"),       // list
        ("MaxConnections", "1"),        // min
        ("InitialR2T", "Yes"),          // OR
        ("ImmediateData", "No"),        // AND
        ("MaxBurstLength", "131072"),   // min
        ("FirstBurstLength", "131072"), // min, and never above MaxBurstLength
        ("DefaultTime2Wait", "2"),      // max
        ("DefaultTime2Retain", "20"),   // min
        ("MaxOutstandingR2T", "1"),     // min
        ("DataPDUInOrder", "Yes"),      // OR
        ("DataSequenceInOrder", "Yes"), // OR
        ("ErrorRecoveryLevel", "0"),    // min
        ("IFMarker", "No"),             // AND
        ("X-org.example.Vendor", "NotUnderstood"),
        ("NoSuchKey", "NotUnderstood"),
    ];
    for (k, v) in want {
        assert_eq!(get(&keys, k), Some(v), "{k} in {keys:?}");
    }
    assert_eq!(
        get(&keys, "MaxRecvDataSegmentLength"),
        Some("262144"),
        "declared, not echoed"
    );
    // Digests are now on in both directions; the initiator's 4096-byte limit splits
    // a 32 KiB read into eight Data-In PDUs.
    r.nop(&[7u8; 13]);
    let _ = r.command(0, &[0x00], 0);
    let itt = r.scsi(0, &read10(10, 64), 32768, true, false, true, &[]);
    let mut got = Vec::new();
    let mut sns = Vec::new();
    loop {
        let pdu = r.recv().expect("Data-In");
        let Header::DataIn(d) = pdu.header else {
            panic!("expected Data-In, got {:?}", pdu.header)
        };
        assert_eq!(d.itt, itt);
        assert!(pdu.data.len() <= 4096);
        sns.push(d.data_sn);
        got.extend_from_slice(&pdu.data);
        if let Some(st) = d.status {
            assert_eq!(u8::from(st), 0);
            assert!(d.final_);
            break;
        }
    }
    assert_eq!(sns, (0..8).collect::<Vec<_>>());
    assert_eq!(&got[..], &image[5120..5120 + 32768]);
    assert_alive(&mut srv, &image);
}

#[test]
fn bad_opcode_is_rejected_and_the_session_goes_on() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x1c;
    bhs[1] = 0x80;
    bhs[16..20].copy_from_slice(&0xabcdu32.to_be_bytes());
    r.send_raw(&bhs);
    let pdu = r.recv().expect("Reject");
    let Header::Reject(rej) = pdu.header else {
        panic!("expected Reject, got {:?}", pdu.header)
    };
    assert_eq!(rej.reason, RejectReason::CommandNotSupported);
    assert_eq!(
        &pdu.data[..],
        &bhs[..],
        "Reject carries the offending header"
    );
    r.nop(b"after reject");
    assert_alive(&mut srv, &image);
}

#[test]
fn truncated_header_harms_no_one() {
    let (mut srv, image, _d) = setup(&[]);
    {
        let mut r = Raw::connect(srv.port);
        r.login_normal(TARGET, &[]);
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = 0x00;
        r.send_raw(&bhs[..20]);
        // Leave it hanging, and let another session work meanwhile.
        assert_alive(&mut srv, &image);
    }
    {
        let mut r = Raw::connect(srv.port);
        r.send_raw(&[0x43, 0x87, 0, 0, 0]);
    }
    assert_alive(&mut srv, &image);
}

#[test]
fn oversized_data_segment_is_rejected_and_closed() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let h = Header::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: r.cmd_sn,
        exp_stat_sn: r.exp_stat_sn,
    });
    let mut bhs = [0u8; BHS_LEN];
    h.encode(0, 16 * 1024 * 1024 - 1, &mut bhs);
    r.send_raw(&bhs);
    let pdu = r.recv().expect("Reject before close");
    let Header::Reject(rej) = pdu.header else {
        panic!("expected Reject, got {:?}", pdu.header)
    };
    assert_eq!(rej.reason, RejectReason::ProtocolError);
    r.expect_closed();
    // The same during login: closed, nothing else.
    let mut r = Raw::connect(srv.port);
    let h = r.login_req(true, false, 1, 3);
    let mut bhs = [0u8; BHS_LEN];
    h.encode(0, 1 << 20, &mut bhs);
    r.send_raw(&bhs);
    r.expect_closed();
    assert_alive(&mut srv, &image);
}

#[test]
fn writes_are_refused_and_the_image_is_untouched() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[("ImmediateData", "Yes"), ("InitialR2T", "No")]);
    let _ = r.command(0, &[0x00], 0);
    let junk = vec![0xeeu8; 1024];
    // WRITE(10) with all its data immediate.
    let itt = r.scsi(
        0,
        &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        512,
        false,
        true,
        true,
        &junk[..512],
    );
    let (_, st, s) = r.collect(itt);
    assert_eq!(st, 2);
    assert_eq!(sense(&s), (7, 0x27), "DATA PROTECT / WRITE PROTECTED");
    // WRITE(10) of two blocks: one immediate, one unsolicited Data-Out. The answer
    // comes after the data is drained.
    let itt = r.scsi(
        0,
        &[0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0],
        1024,
        false,
        true,
        false,
        &junk[..512],
    );
    let h = Header::DataOut(DataOut {
        final_: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        exp_stat_sn: r.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 512,
    });
    r.send(&h, &junk[512..]);
    let (_, st, s) = r.collect(itt);
    assert_eq!(st, 2);
    assert_eq!(sense(&s), (7, 0x27));
    // WRITE SAME(16) too.
    let mut ws = vec![0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
    ws[13] = 1;
    let itt = r.scsi(0, &ws, 512, false, true, true, &junk[..512]);
    let (_, st, s) = r.collect(itt);
    assert_eq!((st, sense(&s)), (2, (7, 0x27)));
    let (data, st, _) = r.command(0, &read10(0, 2), 1024);
    assert_eq!(st, 0);
    assert_eq!(&data[..], &image[..1024]);
    assert_alive(&mut srv, &image);
}

#[test]
fn nop_ping_and_logout() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    r.nop(b"ping");
    assert_eq!(r.logout(), 0);
    r.expect_closed();
    assert_alive(&mut srv, &image);
}

#[test]
fn target_pings_idle_initiators() {
    let (mut srv, image, _d) = setup(&["--nop-interval", "1"]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let pdu = r.recv().expect("target NOP-In");
    let Header::NopIn(n) = pdu.header else {
        panic!("expected NOP-In, got {:?}", pdu.header)
    };
    assert_eq!(n.itt, RESERVED_TAG);
    assert_ne!(n.ttt, RESERVED_TAG);
    let h = Header::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: RESERVED_TAG,
        ttt: n.ttt,
        cmd_sn: r.cmd_sn,
        exp_stat_sn: r.exp_stat_sn,
    });
    r.send(&h, &[]);
    assert_alive(&mut srv, &image);
}

#[test]
fn unanswered_pings_drop_the_connection() {
    let (mut srv, image, _d) = setup(&["--nop-interval", "1", "--nop-timeout", "1"]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let start = std::time::Instant::now();
    let pdu = r.recv().expect("target NOP-In");
    assert!(matches!(pdu.header, Header::NopIn(_)));
    // Say nothing: the target must give up on us.
    r.expect_closed();
    assert!(start.elapsed() < std::time::Duration::from_secs(8));
    assert_alive(&mut srv, &image);
}

#[test]
fn task_management() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let tmf = |r: &mut Raw, function: u8, lun: u64, ref_task_tag: u32| {
        let ref_cmd_sn = r.cmd_sn.wrapping_sub(5);
        r.tmf(function, lun, ref_task_tag, ref_cmd_sn)
    };
    assert_eq!(
        tmf(&mut r, 1, 0, 0x5555),
        1,
        "ABORT TASK of a finished task: no such task"
    );
    assert_eq!(tmf(&mut r, 2, 0, RESERVED_TAG), 0, "ABORT TASK SET");
    assert_eq!(tmf(&mut r, 5, 0, RESERVED_TAG), 0, "LUN RESET");
    assert_eq!(
        tmf(&mut r, 5, 9, RESERVED_TAG),
        2,
        "LUN RESET of a missing LUN"
    );
    assert_eq!(tmf(&mut r, 6, 0, RESERVED_TAG), 0, "TARGET WARM RESET");
    assert_eq!(tmf(&mut r, 8, 0, 1), 4, "TASK REASSIGN needs ERL 2");
    r.nop(b"after TMF");
    assert_eq!(tmf(&mut r, 7, 0, RESERVED_TAG), 0, "TARGET COLD RESET");
    r.expect_closed();
    assert_alive(&mut srv, &image);
}

#[test]
fn discovery_session_send_targets() {
    let (mut srv, image, _d) = setup(&["--advertise", "198.51.100.7:3260"]);
    let mut r = Raw::connect(srv.port);
    assert_eq!(r.login_discovery().0, 0);
    let keys = r.text_request(&[("SendTargets", "All")]);
    assert_eq!(get(&keys, "TargetName"), Some(TARGET));
    assert_eq!(get(&keys, "TargetAddress"), Some("198.51.100.7:3260,1"));
    // SCSI commands have no place in a discovery session.
    let itt = r.scsi(0, &[0x00], 0, false, false, true, &[]);
    let pdu = r.recv().expect("Reject");
    assert!(
        matches!(pdu.header, Header::Reject(_)),
        "{:?} for {itt}",
        pdu.header
    );
    assert_alive(&mut srv, &image);
}

#[test]
fn same_initiator_and_isid_reinstates_the_session() {
    let (mut srv, image, _d) = setup(&[]);
    let mut first = Raw::connect(srv.port);
    first.login_normal(TARGET, &[]);
    let mut second = Raw::connect(srv.port);
    second.login_normal(TARGET, &[]);
    first.expect_closed();
    second.nop(b"new session");
    assert_alive(&mut srv, &image);
}

#[test]
fn residuals_unknown_luns_and_login_errors() {
    let (mut srv, image, _d) = setup(&[]);
    let mut r = Raw::connect(srv.port);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    // Overflow: 4 KiB asked for by the CDB, 1 KiB expected.
    let itt = r.scsi(0, &read10(0, 8), 1024, true, false, true, &[]);
    let pdu = r.recv().expect("Data-In");
    let Header::DataIn(d) = &pdu.header else {
        panic!()
    };
    assert_eq!(d.itt, itt);
    assert_eq!(pdu.data.len(), 1024);
    assert!(d.overflow && !d.underflow && d.residual == 3072, "{d:?}");
    // Underflow: INQUIRY returns 66 bytes of the 255 expected.
    let itt = r.scsi(0, &[0x12, 0, 0, 0, 255, 0], 255, true, false, true, &[]);
    let pdu = r.recv().expect("Data-In");
    let Header::DataIn(d) = &pdu.header else {
        panic!()
    };
    assert_eq!(d.itt, itt);
    assert!(d.underflow && d.residual == 255 - 66, "{d:?}");
    // LUN 9 does not exist.
    let (_, st, s) = r.command(9, &[0x00], 0);
    assert_eq!((st, sense(&s)), (2, (5, 0x25)));
    // Reading past the end.
    let (_, st, s) = r.command(0, &read10(1953, 2), 1024);
    assert_eq!((st, sense(&s)), (2, (5, 0x21)));
    // Unknown opcode.
    let (_, st, s) = r.command(0, &[0xc7], 0);
    assert_eq!((st, sense(&s)), (2, (5, 0x20)));
    // Wrong target name: NOT FOUND, then closed.
    let mut bad = Raw::connect(srv.port);
    let (resp, _) = bad.login_with(&[
        ("InitiatorName", "iqn.2024-01.test:raw"),
        ("TargetName", "iqn.2023-06.csm.iscsi:nobody"),
    ]);
    assert_eq!((resp.status_class, resp.status_detail), (2, 3));
    bad.expect_closed();
    // A SCSI command before login: closed.
    let mut early = Raw::connect(srv.port);
    early.scsi(0, &[0x00], 0, false, false, true, &[]);
    early.expect_closed();
    assert_alive(&mut srv, &image);
}
