//! Unit tests of the connection machine through the in-memory initiator of
//! [`crate::pair`], with simulated time: CmdSN window and held commands, Data-In
//! splitting and residuals, R2T/Data-Out, task management, NOP-In timeouts, logout,
//! the login deadline, unit attentions and the bounds on what a session keeps.

use std::sync::Arc;

use bytes::Bytes;

use super::budget::TargetBudget;
use super::full_feature::{SessionSettings, MAX_IMMEDIATE_TASKS};
use crate::lun_table::{Lun, LunTable};
use crate::pair::{read10, verify10, Pair, Reads, SECOND};
use crate::pdu::*;
use crate::scsi::{AccessState, Identity, LunInfo};

fn image() -> Bytes {
    Bytes::from(
        (0..1u32 << 20)
            .map(|i| (i / 512) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn pair() -> Pair {
    Pair::logged_in(SessionSettings::default(), image(), &[])
}

fn rejects(p: &mut Pair) -> Vec<RejectReason> {
    p.take()
        .into_iter()
        .filter_map(|pdu| match pdu.header {
            Header::Reject(r) => Some(r.reason),
            _ => None,
        })
        .collect()
}

fn tmf(p: &mut Pair, function: TmfFunction, ref_task_tag: u32, ref_cmd_sn: u32) -> TmfResponse {
    let itt = p.itt();
    let h = Header::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function,
        lun: 0,
        itt,
        ref_task_tag,
        cmd_sn: p.cmd_sn,
        exp_stat_sn: 0,
        ref_cmd_sn,
        exp_data_sn: 0,
    });
    p.send(&h, &[]);
    p.take()
        .into_iter()
        .find_map(|pdu| match pdu.header {
            Header::TaskMgmtResponse(t) if t.itt == itt => Some(t.response),
            _ => None,
        })
        .expect("TMF response")
}

fn budget(p: &Pair) -> (usize, usize) {
    let f = p.conn.full_feature().expect("logged in");
    assert_eq!(f.budget().0, f.buffered_bytes(), "charge equals buffers");
    f.budget()
}

#[test]
fn login_completes_and_switches_to_full_feature() {
    let p = pair();
    let o = p.logged_in.as_ref().expect("logged in");
    assert_eq!(o.params.initiator_name, crate::pair::INITIATOR);
    assert!(p.closed.is_none());
}

#[test]
fn a_login_that_does_not_complete_in_time_is_closed() {
    let mut p = Pair::new(SessionSettings::default(), image());
    p.advance(14 * SECOND);
    assert!(p.closed.is_none());
    p.advance(SECOND);
    assert_eq!(p.closed, Some(("login timed out".into(), false)));
    assert_eq!(p.conn.poll_timeout(), None, "no timer after close");
}

#[test]
fn data_in_is_split_by_the_initiators_segment_length_with_status_in_the_last() {
    let mut p = Pair::logged_in(
        SessionSettings::default(),
        image(),
        &[("MaxRecvDataSegmentLength", "8192")],
    );
    let itt = p.command(false, read10(8, 128), 64 << 10);
    let pdus = p.take();
    assert_eq!(pdus.len(), 8);
    let mut expect_offset = 0;
    for (i, pdu) in pdus.iter().enumerate() {
        let Header::DataIn(d) = &pdu.header else {
            panic!("Data-In expected")
        };
        assert_eq!(
            (d.itt, d.data_sn, d.buffer_offset),
            (itt, i as u32, expect_offset)
        );
        assert_eq!(pdu.data.len(), 8192);
        // The image holds each block's LBA (mod 256) in its bytes.
        assert_eq!(pdu.data[0], (8 + expect_offset / 512) as u8);
        expect_offset += 8192;
        assert_eq!(d.status.is_some(), i == 7);
    }
}

#[test]
fn residuals_report_short_and_long_transfers() {
    let mut p = pair();
    // 4 blocks wanted, room for 1: overflow of 1536.
    let itt = p.command(false, read10(0, 4), 512);
    let last = p.take().pop().expect("Data-In");
    let Header::DataIn(d) = last.header else {
        panic!("Data-In expected")
    };
    assert_eq!((d.itt, d.overflow, d.residual), (itt, true, 1536));
    assert_eq!(last.data.len(), 512);
    // 1 block, room for 4: underflow of 1536.
    p.command(false, read10(0, 1), 2048);
    let Header::DataIn(d) = p.take().pop().expect("Data-In").header else {
        panic!()
    };
    assert_eq!((d.underflow, d.residual), (true, 1536));
}

#[test]
fn commands_ahead_of_the_window_wait_and_outside_it_are_dropped() {
    let mut p = pair();
    p.read_mode = Reads::Held;
    let first = p.cmd_sn;
    // CmdSN first+1 arrives before first: held, not run.
    let (a, b) = (p.itt(), p.itt());
    let ha = p.scsi_header(false, a, read10(0, 1), 512);
    let hb = p.scsi_header(false, b, read10(0, 1), 512);
    p.send(&hb, &[]);
    assert!(p.reads.is_empty());
    assert_eq!(budget(&p).0, BHS_LEN, "the held command is charged");
    p.send(&ha, &[]);
    let order: Vec<u32> = p.reads.iter().map(|r| r.itt).collect();
    assert_eq!(order, vec![a, b]);
    // Far outside the window: silently dropped (RFC 7143 section 3.2.2.1).
    let c = p.itt();
    let mut far = p.scsi_header(false, c, read10(0, 1), 512);
    if let Header::ScsiCommand(s) = &mut far {
        s.cmd_sn = first.wrapping_add(100_000);
    }
    p.send(&far, &[]);
    assert_eq!(p.reads.len(), 2);
    assert_eq!(budget(&p).0, 0);
}

#[test]
fn immediate_commands_beyond_their_cap_are_rejected() {
    let mut p = pair();
    // Reads whose bytes never come back stay outstanding.
    p.read_mode = Reads::Held;
    for _ in 0..MAX_IMMEDIATE_TASKS + 4 {
        p.command(true, read10(0, 1), 512);
    }
    assert_eq!(p.reads.len(), MAX_IMMEDIATE_TASKS);
    assert_eq!(
        rejects(&mut p),
        vec![RejectReason::ImmediateCommandReject; 4]
    );
    // Non-immediate commands still have their window.
    p.command(false, read10(0, 1), 512);
    assert_eq!(p.reads.len(), MAX_IMMEDIATE_TASKS + 1);
}

/// A stream of immediate VERIFY(BYTCHK) and WRITE commands that never send their
/// data: each is answered (kept as a task up to the caps, Reject or TASK SET FULL
/// beyond), and what the session buffers never passes its budget.
#[test]
fn immediate_commands_without_data_keep_memory_bounded() {
    let limit = 4 << 20;
    let target = TargetBudget::new(limit);
    let mut p = Pair::logged_in(
        SessionSettings {
            session_buffer_bytes: limit,
            target_budget: Arc::clone(&target),
            ..SessionSettings::default()
        },
        image(),
        &[],
    );
    let mut answered = 0;
    for i in 0..2000u32 {
        let itt = p.itt();
        let cdb = if i % 2 == 0 {
            verify10(2048)
        } else {
            write10()
        };
        let mut h = p.scsi_header(true, itt, cdb, 1 << 20);
        if let Header::ScsiCommand(s) = &mut h {
            s.final_ = i % 2 == 0;
        }
        p.send(&h, &[]);
        for pdu in p.take() {
            match pdu.header {
                Header::Reject(r) => {
                    assert_eq!(r.reason, RejectReason::ImmediateCommandReject);
                    answered += 1;
                }
                Header::ScsiResponse(r) => {
                    assert_eq!(r.status, ScsiStatus::TaskSetFull);
                    answered += 1;
                }
                Header::R2t(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let (used, cap) = budget(&p);
        assert!(used <= cap && target.used() <= limit);
    }
    let outstanding = p.conn.full_feature().map_or(0, |f| f.outstanding());
    assert!(outstanding <= MAX_IMMEDIATE_TASKS);
    assert_eq!(answered + outstanding, 2000);
    p.conn.end();
    drop(p);
    assert_eq!(target.used(), 0);
}

fn write10() -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x2a;
    c[8] = 8;
    c
}

#[test]
fn verify_collects_its_data_with_r2ts_then_compares() {
    let mut p = pair();
    let itt = p.command(false, verify10(2), 1024);
    let r2t = p.take().pop().expect("R2T");
    let Header::R2t(r) = r2t.header else {
        panic!("R2T expected")
    };
    assert_eq!((r.itt, r.buffer_offset, r.desired_len), (itt, 0, 1024));
    // The image's first two blocks hold 0 and 1.
    let mut data = vec![0u8; 1024];
    data[512..].fill(1);
    let out = Header::DataOut(DataOut {
        final_: true,
        lun: 0,
        itt,
        ttt: r.ttt,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 0,
    });
    p.send(&out, &data);
    assert_eq!(p.status_of(itt), (ScsiStatus::Good, None));
    // A different byte is a miscompare.
    let itt = p.command(false, verify10(2), 1024);
    let Header::R2t(r) = p.take().pop().expect("R2T").header else {
        panic!()
    };
    data[700] = 9;
    let out = Header::DataOut(DataOut {
        itt,
        ttt: r.ttt,
        ..match out {
            Header::DataOut(d) => d,
            _ => unreachable!(),
        }
    });
    p.send(&out, &data);
    assert_eq!(
        p.status_of(itt),
        (ScsiStatus::CheckCondition, Some((0x0e, 0x1d, 0x00)))
    );
}

#[test]
fn verify_buffers_are_charged_and_bounded() {
    let target = TargetBudget::new(3 << 20);
    let mut p = Pair::logged_in(
        SessionSettings {
            session_buffer_bytes: 2 << 20,
            target_budget: Arc::clone(&target),
            ..SessionSettings::default()
        },
        image(),
        &[],
    );
    // 1 MiB each: two fit the session's 2 MiB, the third is TASK SET FULL.
    let itts: Vec<u32> = (0..3)
        .map(|_| p.command(false, verify10(2048), 1 << 20))
        .collect();
    assert_eq!(p.status_of(itts[2]), (ScsiStatus::TaskSetFull, None));
    assert_eq!(budget(&p), (2 << 20, 2 << 20));
    assert_eq!(target.used(), 2 << 20);
    // A LUN reset drops both tasks and gives the bytes back.
    assert_eq!(
        tmf(&mut p, TmfFunction::LogicalUnitReset, RESERVED_TAG, 0),
        TmfResponse::Complete
    );
    assert_eq!((budget(&p).0, target.used()), (0, 0));
    drop(p);
    assert_eq!(target.used(), 0);
}

#[test]
fn abort_task_keeps_the_command_numbering_moving() {
    let mut p = pair();
    p.read_mode = Reads::Held;
    let base = p.cmd_sn;
    let cmd = |p: &mut Pair, sn: u32| {
        let itt = p.itt();
        let mut h = p.scsi_header(false, itt, read10(0, 1), 512);
        if let Header::ScsiCommand(s) = &mut h {
            s.cmd_sn = sn;
        }
        p.send(&h, &[]);
        itt
    };
    // base+1 waits for base; aborting it leaves a placeholder, so base and base+2 run.
    let held = cmd(&mut p, base + 1);
    p.cmd_sn = base + 2;
    assert_eq!(
        tmf(&mut p, TmfFunction::AbortTask, held, base + 1),
        TmfResponse::Complete
    );
    let a = cmd(&mut p, base);
    let b = cmd(&mut p, base + 2);
    let itts: Vec<u32> = p.reads.drain(..).map(|r| r.itt).collect();
    assert_eq!(itts, vec![a, b]);
    // Never received (base+3), inside the window and before the TMF's CmdSN.
    p.cmd_sn = base + 4;
    assert_eq!(
        tmf(&mut p, TmfFunction::AbortTask, 0xdead, base + 3),
        TmfResponse::Complete
    );
    let c = cmd(&mut p, base + 4);
    assert_eq!(
        p.reads.drain(..).map(|r| r.itt).collect::<Vec<_>>(),
        vec![c]
    );
    // A late base+3 is a duplicate now; a RefCmdSN outside the window is no task.
    cmd(&mut p, base + 3);
    assert!(p.reads.is_empty());
    p.cmd_sn = base + 5;
    assert_eq!(
        tmf(&mut p, TmfFunction::AbortTask, 0xbeef, base.wrapping_sub(7)),
        TmfResponse::NoSuchTask
    );
    assert_eq!(budget(&p).0, 0);
}

#[test]
fn an_aborted_read_gets_no_answer_when_its_bytes_arrive() {
    let mut p = pair();
    p.read_mode = Reads::Held;
    let itt = p.command(false, read10(0, 1), 512);
    assert_eq!(
        tmf(&mut p, TmfFunction::AbortTask, itt, 0),
        TmfResponse::Complete
    );
    p.complete_read(itt, None);
    assert!(p.take().is_empty());
}

#[test]
fn a_failed_read_is_answered_with_its_sense() {
    let mut p = pair();
    p.read_mode = Reads::Held;
    let itt = p.command(false, read10(0, 1), 512);
    p.complete_read(itt, Some(crate::scsi::Sense::NOT_READY_BECOMING_READY));
    assert_eq!(
        p.status_of(itt),
        (ScsiStatus::CheckCondition, Some((0x02, 0x04, 0x01)))
    );
}

#[test]
fn an_idle_initiator_is_pinged_and_closed_when_it_does_not_answer() {
    let mut p = pair();
    p.advance(4 * SECOND);
    assert!(p.take().is_empty());
    p.advance(SECOND);
    let ping = p.take().pop().expect("NOP-In");
    let Header::NopIn(n) = ping.header else {
        panic!("NOP-In expected")
    };
    assert_eq!(n.itt, RESERVED_TAG);
    // Answered: the connection lives on and the next ping comes later.
    let answer = Header::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: RESERVED_TAG,
        ttt: n.ttt,
        cmd_sn: p.cmd_sn,
        exp_stat_sn: 0,
    });
    p.send(&answer, &[]);
    p.advance(14 * SECOND);
    assert!(p.closed.is_none());
    // Not answered: closed 15 s after the ping, without waiting on the peer.
    p.take();
    p.advance(15 * SECOND);
    assert_eq!(p.closed, Some(("NOP-In ping not answered".into(), false)));
}

#[test]
fn logout_is_answered_then_the_connection_closes_after_sending_it() {
    let mut p = pair();
    let itt = p.itt();
    let h = Header::LogoutRequest(LogoutRequest::close_session(itt, p.cmd_sn, 0));
    p.send(&h, &[]);
    let Header::LogoutResponse(r) = p.take().pop().expect("Logout Response").header else {
        panic!("Logout Response expected")
    };
    assert_eq!((r.itt, r.response), (itt, 0));
    assert_eq!(p.closed, Some(("logout".into(), true)));
}

fn lun(number: u64, identity: &str, version: &str) -> Arc<Lun> {
    let info = LunInfo::new(number, 1 << 20, Identity::lio(identity));
    Arc::new(Lun::new(info, version.into()))
}

/// The sense of every unit attention queued for `lun`, in order, then a good read.
fn attentions(p: &mut Pair, lun: u64) -> Vec<(u8, u8, u8)> {
    let mut seen = Vec::new();
    for _ in 0..4 {
        let itt = p.command_lun(lun, false, read10(0, 1), 512);
        match p.status_of(itt) {
            (ScsiStatus::Good, None) => return seen,
            (ScsiStatus::CheckCondition, Some(s)) => seen.push(s),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no good read after {seen:?}")
}

#[test]
fn a_new_lun_table_raises_each_unit_attention_once() {
    let mut p = pair();
    let a1 = lun(0, "a", "v1");
    p.conn
        .set_luns(Arc::new(LunTable::new(vec![Arc::clone(&a1)])));
    assert_eq!(
        attentions(&mut p, 0),
        [(0x06, 0x28, 0x00)],
        "new image at 0"
    );
    // The same table again is not an event.
    p.conn
        .set_luns(Arc::new(LunTable::new(vec![Arc::clone(&a1)])));
    assert_eq!(attentions(&mut p, 0), []);
    // A LUN added: the others hear the inventory changed, the new one a power-on.
    let b = lun(1, "b", "v1");
    p.conn.set_luns(Arc::new(LunTable::new(vec![
        Arc::clone(&a1),
        Arc::clone(&b),
    ])));
    assert_eq!(attentions(&mut p, 0), [(0x06, 0x3f, 0x0e)]);
    assert_eq!(attentions(&mut p, 1), [(0x06, 0x29, 0x00)]);
    // New content under the same identity and number: medium changed, only there.
    let a2 = lun(0, "a", "v2");
    p.conn
        .set_luns(Arc::new(LunTable::new(vec![a2, Arc::clone(&b)])));
    assert_eq!(attentions(&mut p, 1), []);
    assert_eq!(attentions(&mut p, 0), [(0x06, 0x28, 0x00)]);
    // A LUN that went: one attention there, then it is not supported.
    p.conn
        .set_luns(Arc::new(LunTable::new(vec![Arc::clone(&b)])));
    for want in [(0x06, 0x3f, 0x0e), (0x05, 0x25, 0x00)] {
        let itt = p.command_lun(0, false, read10(0, 1), 512);
        assert_eq!(p.status_of(itt), (ScsiStatus::CheckCondition, Some(want)));
    }
    assert_eq!(attentions(&mut p, 1), [(0x06, 0x3f, 0x0e)]);
}

#[test]
fn a_broken_header_before_login_closes_without_an_answer() {
    let mut p = Pair::new(SessionSettings::default(), image());
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x01; // a SCSI command during login
    p.send_bytes(&bhs);
    assert!(p.closed.is_some());
    assert!(p.take().is_empty());
}

#[test]
fn a_new_text_request_discards_an_abandoned_one() {
    let mut p = pair();
    let text = |p: &mut Pair, cont: bool, data: &[u8]| {
        let itt = p.itt();
        let h = Header::TextRequest(TextRequest {
            immediate: true,
            final_: !cont,
            cont,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: p.cmd_sn,
            exp_stat_sn: 0,
        });
        p.send(&h, data);
    };
    text(&mut p, true, b"Send");
    assert_eq!(budget(&p).0, 4);
    text(&mut p, false, b"SendTargets=All\0");
    let answer = p.take().pop().expect("Text Response");
    let keys = crate::login::parse_pairs(&answer.data, 16).expect("text");
    assert_eq!(keys[0], ("TargetName".into(), crate::pair::TARGET.into()));
    assert_eq!(budget(&p).0, 0);
}

/// What the I/O layer does when a new login reinstates this session: abort the
/// connection, then end it. Nothing it held stays held: its buffers go back to the
/// target budget and no timer is left to run.
#[test]
fn a_reinstated_session_gives_back_what_it_held() {
    let target = TargetBudget::new(8 << 20);
    let mut p = Pair::logged_in(
        SessionSettings {
            target_budget: Arc::clone(&target),
            ..SessionSettings::default()
        },
        image(),
        &[],
    );
    p.command(false, verify10(64), 32 << 10);
    assert_eq!(target.used(), 32 << 10);
    p.conn
        .abort("reinstated by a new login from the same initiator");
    p.pump();
    assert_eq!(
        p.closed,
        Some((
            "reinstated by a new login from the same initiator".into(),
            false
        ))
    );
    assert_eq!(p.conn.poll_timeout(), None);
    p.conn.end();
    assert_eq!(target.used(), 0);
}

/// Every deadline the connection reports lies ahead once its timers have run, so
/// the I/O layer never spins on a timer that is already due.
#[test]
fn timers_never_report_a_deadline_already_handled() {
    let mut p = pair();
    for _ in 0..40 {
        p.advance(SECOND);
        if p.closed.is_some() {
            break;
        }
        let next = p.conn.poll_timeout().expect("a session always has a timer");
        assert!(next > p.now, "deadline {next:?} is not after {:?}", p.now);
    }
    assert_eq!(p.closed, Some(("NOP-In ping not answered".into(), false)));
}

#[test]
fn alua_states_refuse_media_access_after_one_attention_per_lun() {
    let mut p = pair();
    let _ = p.take();
    p.conn.set_access_state(AccessState::Standby);
    let itt = p.command(false, read10(0, 1), 512);
    assert_eq!(
        p.status_of(itt),
        (ScsiStatus::CheckCondition, Some((0x06, 0x2a, 0x06)))
    );
    let itt = p.command(false, read10(0, 1), 512);
    assert_eq!(
        p.status_of(itt),
        (ScsiStatus::CheckCondition, Some((0x02, 0x04, 0x0b)))
    );
    // Setting the same state again is not an event; INQUIRY always answers.
    p.conn.set_access_state(AccessState::Standby);
    let inquiry = {
        let mut c = [0u8; 16];
        c[..6].copy_from_slice(&[0x12, 0, 0, 0, 36, 0]);
        c
    };
    let itt = p.command(false, inquiry, 36);
    assert_eq!(p.status_of(itt), (ScsiStatus::Good, None));
    p.conn.set_access_state(AccessState::ActiveOptimized);
    let itt = p.command(false, read10(0, 1), 512);
    assert_eq!(
        p.status_of(itt),
        (ScsiStatus::CheckCondition, Some((0x06, 0x2a, 0x06)))
    );
    let itt = p.command(false, read10(0, 1), 512);
    assert_eq!(p.status_of(itt), (ScsiStatus::Good, None));
}

#[test]
fn a_drain_asks_the_initiator_to_log_out_within_its_timeout() {
    let mut p = pair();
    let _ = p.take();
    p.conn.request_logout(17);
    p.pump();
    let got = p.take();
    let [Pdu {
        header: Header::AsyncMessage(m),
        ..
    }] = got.as_slice()
    else {
        panic!("one Asynchronous Message expected, got {got:?}")
    };
    assert_eq!((m.event, m.param3, m.lun), (1, 17, 0));
}
