//! CDB decoding and execution against a 1 MiB LU: every CDB gets data, GOOD or
//! CHECK CONDITION sense, and a read never points outside the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3lun::scsi::commands;
use s3lun::scsi::exec::{execute, ExecCtx, Outcome};
use s3lun::scsi::{AccessState, TargetPort};
use s3lun::scsi::{Identity, LunInfo};

const SIZE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut c = [0u8; 16];
    let n = data.len().min(16);
    c[..n].copy_from_slice(&data[..n]);
    let _ = commands::decode(&c);
    let lu = LunInfo::new(0, SIZE, Identity::lio("fuzz"));
    let port = TargetPort::new("iqn.2023-06.csm.iscsi:fuzz", 1);
    let ctx = ExecCtx {
        lu: Some(&lu),
        luns: &[0, 1],
        port: &port,
        // Every ALUA state REPORT TARGET PORT GROUPS may report.
        access: AccessState::ALL[data.len() % AccessState::ALL.len()],
    };
    if let Outcome::Read { offset, len } = execute(&c, &ctx) {
        let padded = SIZE.div_ceil(512) * 512;
        assert!(offset.checked_add(len).is_some_and(|end| end <= padded));
    }
    let none = ExecCtx { lu: None, ..ctx };
    let _ = execute(&c, &none);
});
