//! Unit tests of the full feature phase, driven PDU by PDU with simulated time: the
//! bounds on what a session keeps (immediate commands, tasks, the buffer budget),
//! ABORT TASK of held and never-received commands, and text exchanges.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::budget::TargetBudget;
use super::ffp::{FfpSettings, FullFeature, MAX_IMMEDIATE_TASKS};
use super::outbox::Outbox;
use crate::login::{LoginOutcome, SessionParams};
use crate::lun::LunTable;
use crate::pdu::*;
use crate::scsi::exec::TargetPort;
use crate::store::MemStore;

fn session(settings: FfpSettings) -> FullFeature {
    let store = Arc::new(MemStore(Bytes::from(vec![7u8; 1 << 20])));
    let login = LoginOutcome {
        params: SessionParams {
            initiator_name: "iqn.test:unit".into(),
            ..SessionParams::default()
        },
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 1,
        cid: 0,
        exp_cmd_sn: 10,
        next_stat_sn: 1,
        target_visible: true,
    };
    let mut f = FullFeature::new(
        Arc::new(settings),
        &login,
        Arc::new(LunTable::single(store, "unit")),
        Arc::new(TargetPort::new("iqn.t", 1)),
        Arc::new(Vec::new()),
        Instant::now(),
    );
    // Clear the power-on unit attention.
    let mut out = Outbox::default();
    f.handle(command(true, 1, 10, [0; 16], 0), Instant::now(), &mut out);
    f
}

fn pdu(h: Header, data: &[u8]) -> Pdu {
    let mut raw_bhs = [0u8; BHS_LEN];
    h.encode(0, data.len() as u32, &mut raw_bhs);
    Pdu {
        header: h,
        raw_bhs,
        ahs: Bytes::new(),
        data: Bytes::copy_from_slice(data),
    }
}

fn command(immediate: bool, itt: u32, cmd_sn: u32, cdb: [u8; 16], edtl: u32) -> Pdu {
    pdu(
        Header::ScsiCommand(ScsiCommand {
            immediate,
            final_: true,
            read: cdb[0] == 0x28,
            write: cdb[0] == 0x2f,
            attr: 1,
            lun: 0,
            itt,
            expected_len: edtl,
            cmd_sn,
            exp_stat_sn: 0,
            cdb,
        }),
        &[],
    )
}

fn read10(blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x28;
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn verify(blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x2f;
    c[1] = 0x02;
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// (ITT, SCSI status) of every SCSI Response, and the reasons of every Reject.
fn answers(out: &mut Outbox) -> (Vec<(u32, u8)>, Vec<u8>) {
    let (mut status, mut rejects) = (Vec::new(), Vec::new());
    for f in out.frames.drain(..) {
        match Header::parse(&f.bhs) {
            Ok(Header::ScsiResponse(r)) => status.push((r.itt, r.status)),
            Ok(Header::Reject(j)) => rejects.push(j.reason),
            _ => {}
        }
    }
    (status, rejects)
}

#[test]
fn immediate_commands_beyond_their_cap_are_rejected() {
    let mut f = session(FfpSettings::default());
    let mut out = Outbox::default();
    let now = Instant::now();
    // Reads whose bytes never come back stay outstanding.
    for itt in 100..100 + MAX_IMMEDIATE_TASKS as u32 + 4 {
        f.handle(command(true, itt, 11, read10(1), 512), now, &mut out);
    }
    assert_eq!(out.reads.len(), MAX_IMMEDIATE_TASKS);
    let (_, rejects) = answers(&mut out);
    assert_eq!(rejects, vec![reject_reason::IMMEDIATE_COMMAND_REJECT; 4]);
    // Non-immediate commands still have their window.
    f.handle(command(false, 200, 10, read10(1), 512), now, &mut out);
    assert_eq!(out.reads.len(), MAX_IMMEDIATE_TASKS + 1);
}

#[test]
fn verify_buffers_are_charged_and_bounded() {
    let target = TargetBudget::new(3 << 20);
    let mut f = session(FfpSettings {
        session_buffer_bytes: 2 << 20,
        target_budget: Arc::clone(&target),
        ..FfpSettings::default()
    });
    let mut out = Outbox::default();
    let now = Instant::now();
    // 1 MiB each: two fit the session's 2 MiB, the third is TASK SET FULL.
    for (i, itt) in (300..303).enumerate() {
        f.handle(
            command(false, itt, 10 + i as u32, verify(2048), 1 << 20),
            now,
            &mut out,
        );
    }
    let (status, _) = answers(&mut out);
    assert_eq!(status, vec![(302, 0x28)]);
    assert_eq!(f.budget(), (2 << 20, 2 << 20));
    assert_eq!(f.buffered_bytes(), 2 << 20);
    assert_eq!(target.used(), 2 << 20);
    // A LUN reset drops both tasks and gives the bytes back.
    let tmf = pdu(
        Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: 5,
            lun: 0,
            itt: 9,
            ref_task_tag: RESERVED_TAG,
            cmd_sn: 13,
            exp_stat_sn: 0,
            ref_cmd_sn: 0,
            exp_data_sn: 0,
        }),
        &[],
    );
    f.handle(tmf, now, &mut out);
    assert_eq!((f.buffered_bytes(), target.used()), (0, 0));
    drop(f);
    assert_eq!(target.used(), 0);
}

fn abort(ref_task_tag: u32, ref_cmd_sn: u32, cmd_sn: u32) -> Pdu {
    pdu(
        Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: 1,
            lun: 0,
            itt: 77,
            ref_task_tag,
            cmd_sn,
            exp_stat_sn: 0,
            ref_cmd_sn,
            exp_data_sn: 0,
        }),
        &[],
    )
}

fn tmf_response(out: &mut Outbox) -> u8 {
    out.frames
        .drain(..)
        .find_map(|f| match Header::parse(&f.bhs) {
            Ok(Header::TaskMgmtResponse(t)) => Some(t.response),
            _ => None,
        })
        .expect("TMF response")
}

#[test]
fn abort_task_keeps_the_command_numbering_moving() {
    let mut f = session(FfpSettings::default());
    let mut out = Outbox::default();
    let now = Instant::now();
    // CmdSN 11 waits for 10; aborting it leaves a placeholder, so 10 and 12 run.
    f.handle(command(false, 400, 11, read10(1), 512), now, &mut out);
    assert!(out.reads.is_empty());
    f.handle(abort(400, 11, 12), now, &mut out);
    assert_eq!(tmf_response(&mut out), 0);
    f.handle(command(false, 401, 10, read10(1), 512), now, &mut out);
    f.handle(command(false, 402, 12, read10(1), 512), now, &mut out);
    let itts: Vec<u32> = out.reads.drain(..).map(|r| r.itt).collect();
    assert_eq!(itts, vec![401, 402]);
    // Never received (13), inside the window and before the TMF's CmdSN (14).
    f.handle(abort(0xdead, 13, 14), now, &mut out);
    assert_eq!(tmf_response(&mut out), 0);
    f.handle(command(false, 403, 14, read10(1), 512), now, &mut out);
    assert_eq!(
        out.reads.drain(..).map(|r| r.itt).collect::<Vec<_>>(),
        vec![403]
    );
    // A late 13 is a duplicate now; a RefCmdSN outside the window is no task.
    f.handle(command(false, 404, 13, read10(1), 512), now, &mut out);
    assert!(out.reads.is_empty());
    f.handle(abort(0xbeef, 3, 15), now, &mut out);
    assert_eq!(tmf_response(&mut out), 1);
    assert_eq!(f.buffered_bytes(), 0);
}

fn text(itt: u32, cont: bool, data: &[u8]) -> Pdu {
    pdu(
        Header::TextRequest(TextRequest {
            immediate: true,
            final_: !cont,
            cont,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: 11,
            exp_stat_sn: 0,
        }),
        data,
    )
}

#[test]
fn a_new_text_request_discards_an_abandoned_one() {
    let mut f = session(FfpSettings::default());
    let mut out = Outbox::default();
    let now = Instant::now();
    f.handle(text(1, true, b"Send"), now, &mut out);
    assert_eq!(f.buffered_bytes(), 4);
    f.handle(text(2, false, b"SendTargets=All\0"), now, &mut out);
    let answer = out.frames.drain(..).last().expect("Text Response");
    let keys = crate::login::parse_pairs(&answer.data, 16).expect("text");
    assert_eq!(keys[0], ("TargetName".into(), "iqn.t".into()));
    assert_eq!(f.buffered_bytes(), 0);
}
