//! A minimal initiator that measures 4 KiB READ latency: logs in, issues one READ(10)
//! at a time at random LBAs for the given seconds, prints p50/p99/max in
//! microseconds. Used by benches/e2e.sh during the boot storm.
//!
//! Usage: latency_probe HOST:PORT TARGET-IQN SECONDS [STOP-FILE]
//! It stops early once STOP-FILE exists (the storm is over).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3lun::login::{encode_pairs, parse_pairs};
use s3lun::pdu::framing::{encode_to_vec, frame_len, parse_frame};
use s3lun::pdu::*;

fn recv(s: &mut TcpStream, cfg: &FrameConfig) -> anyhow::Result<Pdu> {
    let mut buf = vec![0u8; BHS_LEN];
    s.read_exact(&mut buf)?;
    let total = frame_len(&buf, cfg)?.unwrap_or(BHS_LEN);
    buf.resize(total, 0);
    s.read_exact(&mut buf[BHS_LEN..])?;
    Ok(parse_frame(Bytes::from(buf), cfg)?)
}

/// Send one command and collect its Data-In until the status arrives.
fn command(s: &mut TcpStream, cfg: &FrameConfig, h: &Header) -> anyhow::Result<Vec<u8>> {
    s.write_all(&encode_to_vec(h, &[], cfg))?;
    let mut data = Vec::new();
    loop {
        let p = recv(s, cfg)?;
        match p.header {
            Header::DataIn(d) => {
                data.extend_from_slice(&p.data);
                if d.status.is_some() {
                    return Ok(data);
                }
            }
            Header::ScsiResponse(_) => return Ok(data),
            _ => {}
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4 || args.len() == 5,
        "usage: latency_probe HOST:PORT TARGET SECONDS [STOP-FILE]"
    );
    let secs: u64 = args[3].parse()?;
    let mut s = TcpStream::connect(&args[1])?;
    s.set_nodelay(true)?;
    let cfg = FrameConfig::LOGIN;
    let mut text = Vec::new();
    encode_pairs(
        &[
            ("InitiatorName", "iqn.2024-01.org.s3lun:probe"),
            ("SessionType", "Normal"),
            ("TargetName", args[2].as_str()),
            ("MaxRecvDataSegmentLength", "262144"),
        ],
        &mut text,
    );
    let login = Header::LoginRequest(LoginRequest::to_full_feature(
        [0x80, 0, 0, 0, 0x42, 1],
        1,
        1,
        0,
    ));
    s.write_all(&encode_to_vec(&login, &text, &cfg))?;
    let r = recv(&mut s, &cfg)?;
    let Header::LoginResponse(lr) = r.header else {
        anyhow::bail!("no login response")
    };
    anyhow::ensure!(
        lr.status_class == 0,
        "login failed: {:?}",
        parse_pairs(&r.data, 64)
    );
    let mut cmd_sn = 1u32;
    let mut lat = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut itt = 10u32;
    let mut blocks = 0u64;
    let mut attempts = 0;
    let stop = args.get(4).map(std::path::PathBuf::from);
    while Instant::now() < end && !stop.as_ref().is_some_and(|p| p.exists()) {
        if blocks == 0 {
            // READ CAPACITY(10) once, to pick LBAs inside the LU.
            let mut cdb = [0u8; 16];
            cdb[0] = 0x25;
            let h = Header::ScsiCommand(ScsiCommand::read(itt, cmd_sn, cdb, 8));
            let data = command(&mut s, &cfg, &h)?;
            cmd_sn += 1;
            itt += 1;
            if let Some(last) = data.get(..4) {
                blocks = u32::from_be_bytes([last[0], last[1], last[2], last[3]]) as u64 + 1;
            }
            // The first command meets the power-on unit attention: ask again.
            attempts += 1;
            anyhow::ensure!(attempts < 3, "READ CAPACITY keeps failing");
            anyhow::ensure!(blocks == 0 || blocks > 8, "LU too small");
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let lba = (rng % (blocks - 8)) as u32;
        let h = Header::ScsiCommand(ScsiCommand::read10(itt, cmd_sn, lba, 8));
        let t = Instant::now();
        command(&mut s, &cfg, &h)?;
        cmd_sn += 1;
        itt += 1;
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    anyhow::ensure!(!lat.is_empty(), "no reads completed");
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "reads {} p50_us {} p99_us {} max_us {}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}
