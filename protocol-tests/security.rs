//! An attacker's initiator against the real binary, each attack answered the way
//! RFC 7143 and SPC/SBC say, while a bystander session keeps reading correct bytes:
//! login keys re-declared to change who is logging in, commands that make the
//! target buffer (immediate, held for a CmdSN gap, VERIFY data), a peer that stops
//! reading, ABORT TASK of commands not yet run, logins racing past the session
//! limit, the metrics listener held open, file descriptors, reservations on a shared
//! image, data digest errors, abandoned text exchanges and foreign LUN addresses.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::raw::{get, read10, sense, Bystander, Raw};
use common::{open_fds, status_kib, write_image, Server, TARGET};
use s3lun::pdu::framing::encode_to_vec;
use s3lun::pdu::*;

const MIB: usize = 1 << 20;
const INITIATOR_ERROR: (u8, u8) = (2, 0);
const OUT_OF_RESOURCES: (u8, u8) = (3, 2);
const CHECK_CONDITION: u8 = 0x02;
const TASK_SET_FULL: u8 = 0x28;
const RESERVATION_CONFLICT: u8 = 0x18;

/// s3lun serving a 4 MiB image from a config file holding `toml` (plus the LUN and
/// `lun_toml` inside its [[lun]] table), with `flags` after it.
fn start(dir: &Path, toml: &str, lun_toml: &str, flags: &[&str]) -> (Server, Vec<u8>) {
    let (img, image) = write_image(dir, "img", 4 * MIB, 91);
    let cfg = dir.join("s3lun.toml");
    let text = format!(
        "{toml}\n[[lun]]\npath = \"{}\"\n{lun_toml}\n",
        img.display()
    );
    std::fs::write(&cfg, text).unwrap();
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(flags);
    (Server::start(&args), image)
}

/// Wait until `cond` holds, up to `limit`; whether it did.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn status_of(r: &LoginResponse) -> (u8, u8) {
    (r.status_class, r.status_detail)
}

/// A first login request in the security stage (to `nsg` when `transit`) naming the
/// raw initiator's own InitiatorName, then `keys`; the response's status.
fn first_request(r: &mut Raw, transit: bool, nsg: u8, keys: &[(&str, &str)]) -> (u8, u8) {
    let name = r.name.clone();
    let mut all = vec![("InitiatorName", name.as_str())];
    all.extend_from_slice(keys);
    status_of(&r.login_step(transit, 0, nsg, &all).0)
}

// ---------------------------------------------------------------------------
// 1. Login keys: once per login, identity only in the first request.

#[test]
fn login_keys_cannot_change_who_is_logging_in() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "node-secret-0123";
    let (srv, image) = start(
        dir.path(),
        &format!(
            "allowed_initiators = [\"iqn.2024-01.test:node\"]\n[chap]\nuser = \"node\"\nsecret = \"{secret}\"\n"
        ),
        "",
        &[],
    );
    let mut node = Raw::as_initiator(srv.port, "iqn.2024-01.test:node", 1);
    node.login_chap(TARGET, "node", secret.as_bytes());
    let mut by = Bystander::ready(node, &image);

    // Authenticate as Discovery (no discovery CHAP configured, so AuthMethod=None
    // passes), then declare SessionType=Normal: RFC 7143 section 6.1 makes the
    // second declaration a protocol error, and no normal session may result.
    let mut evil = Raw::as_initiator(srv.port, "iqn.2024-01.test:intruder", 2);
    let st = first_request(
        &mut evil,
        true,
        1,
        &[("SessionType", "Discovery"), ("AuthMethod", "None")],
    );
    assert_eq!(st, (0, 0), "discovery login goes ahead");
    let (r, _) = evil.login_step(
        true,
        1,
        3,
        &[("SessionType", "Normal"), ("TargetName", TARGET)],
    );
    assert_eq!(status_of(&r), INITIATOR_ERROR, "SessionType changed");
    assert_eq!(r.tsih, 0);
    evil.expect_closed();
    by.read();

    // CHAP as the allowed node, then InitiatorName changed to a name the ACL and
    // the per-initiator limit never saw.
    let mut evil = Raw::as_initiator(srv.port, "iqn.2024-01.test:node", 4);
    let st = first_request(
        &mut evil,
        false,
        0,
        &[
            ("SessionType", "Normal"),
            ("TargetName", TARGET),
            ("AuthMethod", "CHAP"),
        ],
    );
    assert_eq!(st, (0, 0));
    let (r, _) = evil.login_step(
        false,
        0,
        0,
        &[("CHAP_A", "5"), ("InitiatorName", "iqn.2024-01.test:other")],
    );
    assert_eq!(status_of(&r), INITIATOR_ERROR, "InitiatorName changed");
    evil.expect_closed();

    // Any key twice in one request, and once in each of two requests.
    let mut evil = Raw::as_initiator(srv.port, "iqn.2024-01.test:node", 5);
    let st = first_request(
        &mut evil,
        false,
        0,
        &[
            ("TargetName", TARGET),
            ("AuthMethod", "CHAP"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(st, INITIATOR_ERROR, "AuthMethod twice");
    evil.expect_closed();
    by.read();

    // Without CHAP the ACL is the only gate: a normal login of a listed name that
    // renames itself in its second request must fail too.
    let dir2 = tempfile::tempdir().unwrap();
    let (open, image2) = start(
        dir2.path(),
        "allowed_initiators = [\"iqn.2024-01.test:node\"]\n",
        "",
        &[],
    );
    let mut evil = Raw::as_initiator(open.port, "iqn.2024-01.test:node", 6);
    let st = first_request(
        &mut evil,
        true,
        1,
        &[("TargetName", TARGET), ("AuthMethod", "None")],
    );
    assert_eq!(st, (0, 0));
    let (r, _) = evil.login_step(
        true,
        1,
        3,
        &[("InitiatorName", "iqn.2024-01.test:unlisted")],
    );
    assert_eq!(status_of(&r), INITIATOR_ERROR);
    evil.expect_closed();
    // A first request that left SessionType out (so Normal): it cannot be
    // declared later. Identity keys come in the first request or not at all.
    let mut evil = Raw::as_initiator(open.port, "iqn.2024-01.test:node", 7);
    let st = first_request(
        &mut evil,
        false,
        0,
        &[("TargetName", TARGET), ("AuthMethod", "None")],
    );
    assert_eq!(st, (0, 0));
    let (r, _) = evil.login_step(true, 0, 1, &[("SessionType", "Discovery")]);
    assert_eq!(status_of(&r), INITIATOR_ERROR, "late SessionType");
    evil.expect_closed();
    let mut listed = Raw::as_initiator(open.port, "iqn.2024-01.test:node", 8);
    listed.login_normal(TARGET, &[]);
    let mut by2 = Bystander::ready(listed, &image2);
    by2.read();
    by.read();
}

// ---------------------------------------------------------------------------
// 2. Memory: every buffer counts against a per-session and a target budget.

/// VERIFY(10) with BYTCHK=1 over `blocks` blocks: the target must collect the
/// initiator's data (by R2T) before comparing.
fn verify_bytchk(blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x2f;
    c[1] = 0x02;
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// The next SCSI command of `r` to LUN 0 (a fresh ITT; CmdSN taken unless
/// immediate): READ(10) reads, anything else with a length writes.
fn next_command(r: &mut Raw, immediate: bool, cdb: [u8; 16], edtl: u32) -> ScsiCommand {
    let read = cdb[0] == 0x28;
    let c = ScsiCommand {
        immediate,
        final_: true,
        read,
        write: !read && edtl > 0,
        attr: 1,
        lun: 0,
        itt: r.next_itt(),
        expected_len: edtl,
        cmd_sn: r.cmd_sn,
        exp_stat_sn: r.exp_stat_sn,
        cdb,
    };
    if !immediate {
        r.cmd_sn = r.cmd_sn.wrapping_add(1);
    }
    c
}

fn send_command(r: &mut Raw, immediate: bool, cdb: [u8; 16], edtl: u32, data: &[u8]) -> u32 {
    let c = next_command(r, immediate, cdb, edtl);
    r.send(&Header::ScsiCommand(c.clone()), data);
    c.itt
}

/// Reads what the target sends on `s` in a thread until `expected` answers (Rejects
/// of immediate commands, TASK SET FULL, R2Ts) have come, or nothing comes for 15 s;
/// counts them.
fn drain_answers(s: TcpStream, expected: usize) -> std::thread::JoinHandle<(usize, usize, usize)> {
    std::thread::spawn(move || {
        let mut r = Raw {
            s,
            cfg: FrameConfig {
                header_digest: false,
                data_digest: false,
                max_data_segment: 16_777_215,
            },
            cmd_sn: 0,
            exp_stat_sn: 0,
            itt: 0,
            isid: [0; 6],
            name: String::new(),
        };
        let _ = r.s.set_read_timeout(Some(Duration::from_secs(15)));
        let (mut rejects, mut full, mut r2ts) = (0, 0, 0);
        while rejects + full + r2ts < expected {
            let Some(p) = r.recv() else { break };
            match p.header {
                Header::Reject(j) if j.reason == RejectReason::ImmediateCommandReject => {
                    rejects += 1
                }
                Header::ScsiResponse(s) if u8::from(s.status) == TASK_SET_FULL => full += 1,
                Header::R2t(_) => r2ts += 1,
                _ => {}
            }
        }
        (rejects, full, r2ts)
    })
}

#[test]
fn hostile_commands_cannot_grow_the_target() {
    let dir = tempfile::tempdir().unwrap();
    // A small target budget, so several hostile sessions reach it too.
    let (srv, image) = start(
        dir.path(),
        "max_session_buffer_bytes = 16777216\nmax_buffer_bytes = 25165824\n",
        "",
        &["--nop-interval", "0"],
    );
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let rss_before = status_kib(srv.pid(), "VmRSS:");
    // Zeroed allocations are not resident until written: count the address space
    // the process maps for data too, or buffers allocated and never filled would
    // go unseen.
    let data_before = status_kib(srv.pid(), "VmData:");
    let mut answers = Vec::new();
    let mut hostile = Vec::new();
    for n in 0..4u16 {
        let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:hostile", 0x100 + n);
        r.login_normal(TARGET, &[]);
        let _ = r.command(0, &[0x00], 0);
        answers.push(drain_answers(r.s.try_clone().unwrap(), 20_000));
        // 10,000 immediate VERIFYs asking for 4 MiB each, never sending the data,
        // then 10,000 more inside the CmdSN window: 48 bytes each.
        let mut burst = Vec::new();
        for i in 0..20_000u32 {
            let c = next_command(&mut r, i < 10_000, verify_bytchk(8192), 4 * MIB as u32);
            let h = Header::ScsiCommand(c);
            burst.extend_from_slice(&encode_to_vec(&h, &[], &r.cfg));
        }
        r.send_raw(&burst);
        by.read();
        hostile.push(r);
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..8 {
        by.read();
    }
    let rss_after = status_kib(srv.pid(), "VmRSS:");
    let data_after = status_kib(srv.pid(), "VmData:");
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    println!(
        "4 sessions x 20,000 hostile VERIFY commands: VmRSS {rss_before} kB -> {rss_after} kB, VmData {data_before} kB -> {data_after} kB"
    );
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB");
    let mapped_mib = data_after.saturating_sub(data_before) / 1024;
    assert!(mapped_mib < 256, "data mappings grew by {mapped_mib} MiB");
    drop(hostile);
    let (mut rejects, mut full, mut r2ts) = (0, 0, 0);
    for a in answers {
        let (j, f, r) = a.join().unwrap();
        rejects += j;
        full += f;
        r2ts += r;
    }
    println!("answers: {rejects} immediate rejects, {full} TASK SET FULL, {r2ts} R2Ts");
    // 16 MiB / 4 MiB = 4 VERIFYs per session may collect, and the target's 24 MiB
    // hold 6 in all; every other command is answered TASK SET FULL at once.
    assert!(r2ts <= 6, "{r2ts} R2Ts: VERIFY buffers beyond the budget");
    assert!(
        full + rejects >= 4 * 20_000 - 6,
        "every command over the budget is answered"
    );
    by.read();
}

#[test]
fn commands_held_for_a_cmdsn_gap_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = start(dir.path(), "", "", &["--nop-interval", "0"]);
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let rss_before = status_kib(srv.pid(), "VmRSS:");
    let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:gaps", 9);
    r.login_normal(TARGET, &[("MaxRecvDataSegmentLength", "262144")]);
    // CmdSN ExpCmdSN is never sent: every later command waits, each carrying 256 KiB
    // of immediate data (a WRITE the LU will refuse anyway). 127 of them would be
    // 32 MiB; the 16 MiB session budget ends the connection first.
    let gap = r.cmd_sn;
    let data = vec![0xa5u8; 256 * 1024];
    let mut closed = false;
    for i in 1..127u32 {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x2a;
        cdb[8] = 0x02; // 512 blocks
        let h = Header::ScsiCommand(ScsiCommand {
            cmd_sn: gap.wrapping_add(i),
            ..next_command(&mut r, false, cdb, data.len() as u32)
        });
        if r.s.write_all(&encode_to_vec(&h, &data, &r.cfg)).is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        r.expect_closed();
    }
    let rss_after = status_kib(srv.pid(), "VmRSS:");
    println!("held commands: VmRSS {rss_before} kB -> {rss_after} kB");
    assert!(rss_after.saturating_sub(rss_before) < 48 * 1024);
    by.read();
}

// ---------------------------------------------------------------------------
// 3. A peer that stops reading: timers, reinstatement, shutdown and the write
//    timeout all still act.

/// Log in and ask for far more Data-In than socket buffers hold, never reading it.
fn stall(port: u16, name: &str, isid_tail: u16) -> Raw {
    let mut r = Raw::as_initiator(port, name, isid_tail);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    for _ in 0..64 {
        r.scsi(0, &read10(0, 8192), 4 * MIB as u32, true, false, true, &[]);
    }
    std::thread::sleep(Duration::from_millis(500));
    r
}

#[test]
fn a_peer_that_stops_reading_is_still_reinstated_timed_out_and_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, image) = start(
        dir.path(),
        "write_timeout_secs = 4\n",
        "",
        &["--nop-interval", "0"],
    );
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let base = open_fds(srv.pid());

    // Reinstatement: a new login with the stalled session's name and ISID takes
    // over, and the stalled connection is closed at once.
    let stalled = stall(srv.port, "iqn.2024-01.test:stuck", 1);
    assert_eq!(open_fds(srv.pid()), base + 1);
    let mut again = Raw::as_initiator(srv.port, "iqn.2024-01.test:stuck", 1);
    again.login_normal(TARGET, &[]);
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || open_fds(srv.pid()) == base + 1),
        "the stalled connection was not closed by reinstatement"
    );
    println!(
        "reinstatement closed the stalled connection in {:?}",
        t.elapsed()
    );
    drop(stalled);
    drop(again);
    by.read();

    // The write timeout: no progress for 4 s closes the connection.
    assert!(eventually(Duration::from_secs(2), || open_fds(srv.pid()) == base));
    let stalled = stall(srv.port, "iqn.2024-01.test:stuck", 2);
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || open_fds(srv.pid()) == base),
        "the write timeout did not close the stalled connection"
    );
    let took = t.elapsed();
    println!("write timeout closed the stalled connection after {took:?}");
    assert!(took >= Duration::from_secs(2), "closed before the timeout");
    drop(stalled);
    by.read();

    // Shutdown does not wait on a stalled write.
    let _stalled = stall(srv.port, "iqn.2024-01.test:stuck", 3);
    let t = Instant::now();
    srv.stop();
    println!("shutdown with a stalled writer took {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(8));
}

#[test]
fn nop_timeout_acts_while_a_write_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = start(
        dir.path(),
        "write_timeout_secs = 600\n",
        "",
        &["--nop-interval", "1", "--nop-timeout", "2"],
    );
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let base = open_fds(srv.pid());
    let _stalled = stall(srv.port, "iqn.2024-01.test:stuck", 1);
    // The bystander keeps reading (and so answering its own pings) meanwhile.
    assert!(
        eventually(Duration::from_secs(10), || {
            by.read();
            open_fds(srv.pid()) == base
        }),
        "the NOP-In timeout did not close the stalled connection"
    );
    // The bystander answers pings, so it stays.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        by.read();
    }
}

// ---------------------------------------------------------------------------
// 4. ABORT TASK of commands not executed (RFC 7143 section 11.5.1).

fn answer_of(r: &mut Raw, itt: u32) -> u8 {
    r.collect(itt).1
}

#[test]
fn abort_task_of_unexecuted_commands_keeps_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = start(dir.path(), "", "", &["--nop-interval", "0"]);
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:abort", 1);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);

    // A command held for a gap (CmdSN N+1 while N is missing) is aborted; then N
    // arrives. N and N+2 must both run: N+1 counts as received.
    let n = r.cmd_sn;
    r.cmd_sn = n.wrapping_add(1);
    let held = r.scsi(0, &read10(0, 1), 512, true, false, true, &[]);
    assert_eq!(r.tmf(1, 0, held, n.wrapping_add(1)), 0, "function complete");
    r.cmd_sn = n;
    let first = r.scsi(0, &read10(1, 1), 512, true, false, true, &[]);
    assert_eq!(answer_of(&mut r, first), 0);
    r.cmd_sn = n.wrapping_add(2);
    let after = r.scsi(0, &read10(2, 1), 512, true, false, true, &[]);
    assert_eq!(
        answer_of(&mut r, after),
        0,
        "the command after the aborted one ran"
    );

    // A command never received: RefCmdSN in the window, before the TMF's CmdSN.
    // The target takes it as received, so the next command is not held forever.
    let lost = r.cmd_sn;
    r.cmd_sn = lost.wrapping_add(1);
    assert_eq!(r.tmf(1, 0, 0x7777_0000, lost), 0, "function complete");
    let next = r.scsi(0, &read10(3, 1), 512, true, false, true, &[]);
    assert_eq!(
        answer_of(&mut r, next),
        0,
        "the command after the lost one ran"
    );
    // RefCmdSN outside the window: task does not exist.
    let gone = r.cmd_sn.wrapping_sub(50);
    assert_eq!(r.tmf(1, 0, 0x7777_0001, gone), 1, "no such task");
    // The late arrival of the aborted CmdSN is a duplicate: dropped, not run (an
    // answer to it would fail the ITT checks of the reads below).
    let saved = r.cmd_sn;
    r.cmd_sn = lost;
    let _dup = r.scsi(0, &read10(4, 1), 512, true, false, true, &[]);
    r.cmd_sn = saved;
    r.nop(b"still in step");
    r.read_checked(&image, 5, 3);
    by.read();
}

// ---------------------------------------------------------------------------
// 5. max_sessions is taken when a login is admitted, not when it completes.

#[test]
fn logins_started_together_respect_max_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = start(dir.path(), "max_sessions = 5\n", "", &[]);
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let port = srv.port;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let name = format!("iqn.2024-01.test:racer{i}");
                let mut r = Raw::as_initiator(port, &name, i as u16);
                // First request: admitted (or refused) here.
                let first = first_request(
                    &mut r,
                    false,
                    0,
                    &[
                        ("SessionType", "Normal"),
                        ("TargetName", TARGET),
                        ("AuthMethod", "None"),
                    ],
                );
                barrier.wait();
                if first != (0, 0) {
                    return (first, r);
                }
                let (last, _) = r.login_step(true, 0, 3, &[]);
                (status_of(&last), r)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == (0, 0)).count();
    let refused = results
        .iter()
        .filter(|(s, _)| *s == OUT_OF_RESOURCES)
        .count();
    println!("{ok} logged in, {refused} out of resources");
    assert_eq!(ok, 4, "max_sessions 5 with the bystander");
    assert_eq!(refused, n - 4);
    by.read();
    // Slots come back: a failed or finished login frees its slot.
    drop(results);
    assert!(eventually(Duration::from_secs(3), || {
        let mut r = Raw::as_initiator(port, "iqn.2024-01.test:late", 1);
        r.try_login(TARGET, &[]).0.status_class == 0
    }));
    by.read();
}

// ---------------------------------------------------------------------------
// 6. The metrics listener: capped, timed out, 404 for other paths, and accept
//    errors (out of descriptors) backed off.

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    (!text.is_empty()).then_some(text)
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn metrics_listener_is_bounded_and_accept_errors_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let mport = common::free_port();
    let metrics = format!("127.0.0.1:{mport}");
    let (srv, image) = start(dir.path(), "", "", &["--metrics-listen", &metrics]);
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let pid = srv.pid();
    let page = http_get(mport, "/metrics").expect("metrics");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("s3lun_sessions"));
    let other = http_get(mport, "/").expect("answer");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");

    // 400 idle connections: at most 256 are kept (the oldest idle one is closed for
    // a newcomer), and only for the 2 s header timeout.
    let base = open_fds(pid);
    let idle: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", mport)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = open_fds(pid).saturating_sub(base);
    println!("400 idle metrics connections: {held} descriptors held");
    assert!(held <= 258, "{held} metrics connections kept");
    by.read();
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) <= base + 1),
        "idle metrics connections outlived their timeout"
    );
    drop(idle);
    assert!(http_get(mport, "/metrics").is_some_and(|p| p.contains("s3lun_sessions")));

    // Out of descriptors: lower the running target's limit and flood both
    // listeners. Accept fails with EMFILE; the listeners must back off, not spin.
    let soft_limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .unwrap();
    let limit = open_fds(pid) + 8;
    let st = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("prlimit");
    assert!(st.success());
    let flood: Vec<TcpStream> = (0..64)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", srv.port)).ok())
        .chain((0..64).filter_map(|_| TcpStream::connect(("127.0.0.1", mport)).ok()))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - before;
    println!(
        "2 s out of descriptors with {} connections waiting: {spent} ticks of CPU",
        flood.len()
    );
    assert!(spent < 40, "accept loop spun: {spent} ticks in 2 s");
    by.read();
    drop(flood);
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft_limit}:"),
        ])
        .status()
        .expect("prlimit");
    assert!(st.success());
    assert!(eventually(Duration::from_secs(5), || {
        let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:after", 1);
        r.try_login(TARGET, &[]).0.status_class == 0
    }));
    by.read();
}

// ---------------------------------------------------------------------------
// 7. File descriptors: the soft limit is raised; a limit that cannot cover
//    max_connections refuses to start.

#[test]
fn open_files_limit_is_raised_or_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write_image(dir.path(), "img", MIB, 5);
    let bin = env!("CARGO_BIN_EXE_s3lun");
    let mut refused = Command::new("prlimit")
        .args(["--nofile=256:256", bin, "serve", "--listen", "127.0.0.1:0"])
        .args(["--lun", img.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit s3lun");
    let exited = eventually(Duration::from_secs(10), || {
        matches!(refused.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = refused.kill();
        let _ = refused.wait();
        panic!("started with 256 descriptors for 4096 connections");
    }
    let out = refused.wait_with_output().expect("exit status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with 256 descriptors: {err}");
    assert!(
        err.contains("RLIMIT_NOFILE") && err.contains("max_connections"),
        "unclear message: {err}"
    );
    // Within the hard limit: the soft limit is raised to it.
    let mut child = Command::new("prlimit")
        .args(["--nofile=256:6000", bin, "serve", "--listen", "127.0.0.1:0"])
        .args(["--lun", img.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit s3lun");
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.starts_with("s3lun: listening"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let nums: Vec<&str> = row.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["6000", "6000"], "{row}");
}

// ---------------------------------------------------------------------------
// 8. Reservations: refused on shared images unless a LUN is configured for them.

const RESERVE6: [u8; 6] = [0x16, 0, 0, 0, 0, 0];
const RELEASE6: [u8; 6] = [0x17, 0, 0, 0, 0, 0];

#[test]
fn reservations_cannot_lock_others_out_of_a_shared_image() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, image) = start(dir.path(), "", "", &[]);
    let port = _srv.port;
    let mut by = Bystander::new(port, TARGET, &image);
    let mut a = Raw::as_initiator(port, "iqn.2024-01.test:a", 1);
    a.login_normal(TARGET, &[]);
    let _ = a.command(0, &[0x00], 0);
    let (_, st, s) = a.command(0, &RESERVE6, 0);
    assert_eq!(st, CHECK_CONDITION);
    assert_eq!(
        sense(&s),
        (0x05, 0x20),
        "RESERVE(6): invalid command operation code"
    );
    let (_, st, _) = a.command(0, &RELEASE6, 0);
    assert_eq!(st, CHECK_CONDITION);
    by.read();

    // Where configured, SPC-2 reservations work as before.
    let dir2 = tempfile::tempdir().unwrap();
    let (srv2, image2) = start(dir2.path(), "", "reservations = true", &[]);
    let mut b = Bystander::new(srv2.port, TARGET, &image2);
    let mut a = Raw::as_initiator(srv2.port, "iqn.2024-01.test:a", 1);
    a.login_normal(TARGET, &[]);
    let _ = a.command(0, &[0x00], 0);
    assert_eq!(a.command(0, &RESERVE6, 0).1, 0);
    let (_, st, _) = b.raw.command(0, &read10(0, 1), 512);
    assert_eq!(st, RESERVATION_CONFLICT);
    assert_eq!(a.command(0, &RELEASE6, 0).1, 0);
    b.read();
    by.read();
}

// ---------------------------------------------------------------------------
// 9. Data digest errors (RFC 7143 section 7.8).

/// Send a PDU whose data digest is wrong.
fn send_corrupt(r: &mut Raw, h: &Header, data: &[u8]) {
    let mut wire = encode_to_vec(h, data, &r.cfg);
    let n = wire.len();
    wire[n - 1] ^= 0xff;
    r.send_raw(&wire);
}

fn expect_reject(r: &mut Raw, reason: RejectReason) {
    let p = r.recv().expect("Reject");
    let Header::Reject(j) = p.header else {
        panic!("expected a Reject, got {:?}", p.header)
    };
    assert_eq!(j.reason, reason);
}

#[test]
fn data_digest_errors_answer_the_command_and_keep_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = start(dir.path(), "", "", &["--nop-interval", "0"]);
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:crc", 1);
    r.login_normal(TARGET, &[("DataDigest", "CRC32C")]);
    assert!(r.cfg.data_digest);
    let _ = r.command(0, &[0x00], 0);

    // VERIFY with its data as immediate data, whose digest fails: Reject, then the
    // command is answered CHECK CONDITION, ABORTED COMMAND / PROTOCOL SERVICE CRC
    // ERROR, and its CmdSN is consumed.
    let c = next_command(&mut r, false, verify_bytchk(1), 512);
    let itt = c.itt;
    send_corrupt(&mut r, &Header::ScsiCommand(c), &image[..512]);
    expect_reject(&mut r, RejectReason::DataDigestError);
    let (_, st, s) = r.collect(itt);
    assert_eq!((st, sense(&s)), (CHECK_CONDITION, (0x0b, 0x47)));
    // The next command runs without any retry.
    r.read_checked(&image, 7, 2);

    // A solicited Data-Out whose digest fails: the task ends the same way once its
    // last Data-Out is in.
    let itt = send_command(&mut r, false, verify_bytchk(1), 512, &[]);
    let p = r.recv().expect("R2T");
    let Header::R2t(t) = p.header else {
        panic!("expected R2T, got {:?}", p.header)
    };
    let d = Header::DataOut(DataOut {
        final_: true,
        lun: 0,
        itt,
        ttt: t.ttt,
        exp_stat_sn: r.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    });
    send_corrupt(&mut r, &d, &image[..512]);
    expect_reject(&mut r, RejectReason::DataDigestError);
    let (_, st, s) = r.collect(itt);
    assert_eq!((st, sense(&s)), (CHECK_CONDITION, (0x0b, 0x47)));
    // And the same VERIFY with good data compares.
    let itt = send_command(&mut r, false, verify_bytchk(1), 512, &image[..512]);
    assert_eq!(r.collect(itt).1, 0, "VERIFY of the image's own bytes");
    r.read_checked(&image, 9, 4);
    by.read();
}

// ---------------------------------------------------------------------------
// 10. An abandoned text exchange, and LUN fields that are not ours.

fn text_pdu(r: &mut Raw, itt: u32, cont: bool, data: &[u8]) -> Pdu {
    let h = Header::TextRequest(TextRequest {
        immediate: true,
        final_: !cont,
        cont,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: r.cmd_sn,
        exp_stat_sn: r.exp_stat_sn,
    });
    r.send(&h, data);
    r.recv().expect("Text Response")
}

#[test]
fn abandoned_text_and_foreign_lun_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, image) = start(dir.path(), "", "", &["--nop-interval", "0"]);
    let mut by = Bystander::new(srv.port, TARGET, &image);
    let mut r = Raw::as_initiator(srv.port, "iqn.2024-01.test:text", 1);
    r.login_normal(TARGET, &[]);
    let _ = r.command(0, &[0x00], 0);
    // The first piece of a request, then a new request (another ITT, reserved TTT):
    // the new one is answered on its own.
    let a = r.next_itt();
    let ack = text_pdu(&mut r, a, true, b"X-junk.key=");
    assert!(matches!(ack.header, Header::TextResponse(_)));
    let b = r.next_itt();
    let p = text_pdu(&mut r, b, false, b"SendTargets=All\0");
    let Header::TextResponse(t) = &p.header else {
        panic!("expected Text Response, got {:?}", p.header)
    };
    assert_eq!(t.itt, b);
    let keys = common::raw::pairs(&p.data);
    assert_eq!(get(&keys, "TargetName"), Some(TARGET), "{keys:?}");
    assert!(get(&keys, "X-junk.keySendTargets").is_none());

    // LUN fields naming another bus or a second level: LOGICAL UNIT NOT SUPPORTED,
    // not LUN 0.
    for field in [0x0100_0000_0000_0000u64, 0x0000_0001_0000_0000] {
        let mut cdb = [0u8; 16];
        cdb[..10].copy_from_slice(&read10(0, 1));
        let c = ScsiCommand {
            lun: field,
            ..next_command(&mut r, false, cdb, 512)
        };
        let itt = c.itt;
        r.send(&Header::ScsiCommand(c), &[]);
        let (d, st, s) = r.collect(itt);
        assert!(d.is_empty(), "LUN field {field:#x} read data");
        assert_eq!(
            (st, sense(&s)),
            (CHECK_CONDITION, (0x05, 0x25)),
            "{field:#x}"
        );
    }
    r.read_checked(&image, 0, 8);
    by.read();
}
