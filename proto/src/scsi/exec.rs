//! Command dispatch: one CDB in, one [`Outcome`] out. Unit attentions and task
//! bookkeeping are the session's; reading image bytes is the caller's.

use super::cdb::{op, Command};
use super::commands::{decode, Attention};
use super::inquiry::{self, MAX_TRANSFER_BLOCKS};
use super::logical_unit::encode_lun;
use super::{mode, opcodes, truncate, AccessState, LunInfo, Sense, TargetPort};

pub struct ExecCtx<'a> {
    /// The addressed LU, or `None` when the LUN names nothing.
    pub lu: Option<&'a LunInfo>,
    /// Every LUN visible to this session, for REPORT LUNS.
    pub luns: &'a [u64],
    pub port: &'a TargetPort,
    /// The port group's ALUA state, for REPORT TARGET PORT GROUPS.
    pub access: AccessState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// GOOD status with this data (already cut to the allocation length).
    Data(Vec<u8>),
    /// GOOD status with these image bytes, to be read by the caller.
    Read { offset: u64, len: u64 },
    /// GOOD status, no data.
    Good,
    /// CHECK CONDITION with this sense.
    Check(Sense),
    /// RESERVATION CONFLICT status.
    Conflict,
    /// VERIFY with BYTCHK: compare the Data-Out buffer (one block repeated when
    /// `pattern`) with the image bytes at `offset..offset + len`.
    Compare {
        offset: u64,
        len: u64,
        pattern: bool,
    },
}

/// Commands that may be answered while a unit attention is pending (SAM-5 5.14),
/// as the command table says.
pub fn bypasses_unit_attention(cdb: &[u8; 16]) -> bool {
    super::commands::lookup(cdb).is_some_and(|c| c.attention == Attention::Bypasses)
}

fn range_ok(lu: &LunInfo, lba: u64, blocks: u64) -> bool {
    lba.checked_add(blocks)
        .is_some_and(|end| end <= lu.blocks())
}

pub fn execute(cdb: &[u8; 16], ctx: &ExecCtx) -> Outcome {
    let cmd = match decode(cdb) {
        Ok(c) => c,
        Err(sense) => return Outcome::Check(sense),
    };
    match exec(cmd, ctx) {
        Ok(o) => o,
        Err(sense) => Outcome::Check(sense),
    }
}

fn exec(cmd: Command, ctx: &ExecCtx) -> Result<Outcome, Sense> {
    // Commands that work without an LU behind the LUN.
    match cmd {
        Command::ReportLuns { select, alloc } => return report_luns(select, alloc, ctx.luns),
        Command::Inquiry {
            evpd: false, alloc, ..
        } => return Ok(Outcome::Data(truncate(inquiry::standard(ctx.lu), alloc))),
        Command::RequestSense { desc, alloc } => {
            let sense = if ctx.lu.is_some() {
                Sense::NO_SENSE
            } else {
                Sense::LU_NOT_SUPPORTED
            };
            let data = if desc {
                vec![0x72, sense.key, sense.asc, sense.ascq, 0, 0, 0, 0]
            } else {
                sense.fixed().to_vec()
            };
            return Ok(Outcome::Data(truncate(data, alloc)));
        }
        _ => {}
    }
    let Some(lu) = ctx.lu else {
        return Err(Sense::LU_NOT_SUPPORTED);
    };
    Ok(match cmd {
        Command::Inquiry { page, alloc, .. } => {
            Outcome::Data(truncate(inquiry::vpd(page, lu, ctx.port)?, alloc))
        }
        Command::TestUnitReady | Command::StartStopUnit | Command::PreventAllow => Outcome::Good,
        Command::ReadCapacity10 => {
            let last = u32::try_from(lu.blocks().saturating_sub(1)).unwrap_or(u32::MAX);
            let mut d = last.to_be_bytes().to_vec();
            d.extend_from_slice(&lu.block_size.to_be_bytes());
            Outcome::Data(d)
        }
        Command::ReadCapacity16 { alloc } => {
            let mut d = vec![0u8; 32];
            d[..8].copy_from_slice(&lu.blocks().saturating_sub(1).to_be_bytes());
            d[8..12].copy_from_slice(&lu.block_size.to_be_bytes());
            Outcome::Data(truncate(d, alloc))
        }
        Command::Read { lba, blocks } => {
            if blocks == 0 {
                if lba > lu.blocks() {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                Outcome::Good
            } else if !range_ok(lu, lba, blocks) {
                return Err(Sense::LBA_OUT_OF_RANGE);
            } else if blocks > MAX_TRANSFER_BLOCKS as u64 {
                return Err(Sense::INVALID_FIELD_IN_CDB);
            } else {
                let bs = lu.block_size as u64;
                Outcome::Read {
                    offset: lba * bs,
                    len: blocks * bs,
                }
            }
        }
        Command::ModeSense(m) => Outcome::Data(truncate(mode::mode_sense(lu, &m)?, m.alloc)),
        Command::ReportSupportedOpcodes {
            rctd,
            options,
            opcode,
            sa,
            alloc,
        } => Outcome::Data(truncate(opcodes::report(rctd, options, opcode, sa)?, alloc)),
        Command::SyncCache { lba, blocks } | Command::PreFetch { lba, blocks } => {
            if !range_ok(lu, lba, blocks) {
                return Err(Sense::LBA_OUT_OF_RANGE);
            }
            Outcome::Good
        }
        Command::Verify {
            lba,
            blocks,
            bytchk,
        } => {
            if !range_ok(lu, lba, blocks) {
                return Err(Sense::LBA_OUT_OF_RANGE);
            }
            if bytchk == 0 || blocks == 0 {
                Outcome::Good
            } else if blocks > MAX_TRANSFER_BLOCKS as u64 {
                return Err(Sense::INVALID_FIELD_IN_CDB);
            } else {
                let bs = lu.block_size as u64;
                Outcome::Compare {
                    offset: lba * bs,
                    len: blocks * bs,
                    pattern: bytchk == 3,
                }
            }
        }
        Command::GetLbaStatus { lba, alloc } => {
            if lba >= lu.blocks() {
                return Err(Sense::LBA_OUT_OF_RANGE);
            }
            // Everything is mapped: one descriptor from `lba` to the end.
            let mut d = vec![0u8; 24];
            d[..4].copy_from_slice(&20u32.to_be_bytes());
            d[8..16].copy_from_slice(&lba.to_be_bytes());
            let n = u32::try_from(lu.blocks() - lba).unwrap_or(u32::MAX);
            d[16..20].copy_from_slice(&n.to_be_bytes());
            Outcome::Data(truncate(d, alloc))
        }
        Command::ReportTargetPortGroups { extended, alloc } => Outcome::Data(truncate(
            report_target_port_groups(extended, ctx.port, ctx.access),
            alloc,
        )),
        Command::PersistentReserveIn { sa, alloc } => {
            // No PERSISTENT RESERVE OUT here, so nothing is ever registered: every
            // report is empty, at generation 0.
            let d = match sa {
                0 | 1 | 3 => vec![0u8; 8],
                // REPORT CAPABILITIES: length 8, TMV set, no reservation types.
                2 => vec![0, 8, 0, 0x80, 0, 0, 0, 0],
                _ => return Err(Sense::bad_cdb_field(1, None)),
            };
            Outcome::Data(truncate(d, alloc))
        }
        Command::ReadDefectData {
            twelve,
            flags,
            alloc,
        } => {
            // No defects: a header with an empty list in the requested format.
            let d = if twelve {
                vec![0, flags, 0, 0, 0, 0, 0, 0]
            } else {
                vec![0, flags, 0, 0]
            };
            Outcome::Data(truncate(d, alloc))
        }
        Command::Write { opcode, range } => {
            // A malformed CDB is reported as such before write protection (SBC-4 4.18).
            if let Some((lba, blocks)) = range {
                if !range_ok(lu, lba, blocks) {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                // Zero blocks transfer nothing and change nothing: not an error
                // (except WRITE SAME, where zero means "to the end").
                let write_same = matches!(opcode, op::WRITE_SAME_10 | op::WRITE_SAME_16);
                if blocks == 0 && !write_same {
                    return Ok(Outcome::Good);
                }
            }
            return Err(Sense::WRITE_PROTECTED);
        }
        Command::Unsupported { .. } => return Err(Sense::INVALID_OPCODE),
        Command::ReportLuns { .. } | Command::RequestSense { .. } => Outcome::Good,
    })
}

/// One target port group, in `state`, holding our one target port.
fn report_target_port_groups(extended: bool, port: &TargetPort, state: AccessState) -> Vec<u8> {
    let mut d = Vec::with_capacity(20);
    d.extend_from_slice(&[0u8; 4]);
    if extended {
        // Format type 1, implicit transition time 0.
        d.extend_from_slice(&[0x10, 0, 0, 0]);
    }
    // PREF while active/optimized, then the state.
    let pref = if state == AccessState::ActiveOptimized {
        0x80
    } else {
        0
    };
    d.push(pref | state.code());
    // T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP: every state an operator can set.
    d.push(0x8f);
    d.extend_from_slice(&port.group_id.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 1]); // status code, vendor, one target port
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&port.relative_port.to_be_bytes());
    let len = (d.len() - 4) as u32;
    d[..4].copy_from_slice(&len.to_be_bytes());
    d
}

fn report_luns(select: u8, alloc: usize, luns: &[u64]) -> Result<Outcome, Sense> {
    if alloc < 16 {
        return Err(Sense::bad_cdb_field(6, None));
    }
    let list: Vec<u64> = match select {
        0x00 | 0x02 => luns.to_vec(),
        // Well-known LUNs only: we have none.
        0x01 => Vec::new(),
        0x10..=0x12 => luns.to_vec(),
        _ => return Err(Sense::bad_cdb_field(2, None)),
    };
    let mut d = Vec::with_capacity(8 + 8 * list.len());
    d.extend_from_slice(&((list.len() * 8) as u32).to_be_bytes());
    d.extend_from_slice(&[0u8; 4]);
    for l in list {
        d.extend_from_slice(&encode_lun(l).to_be_bytes());
    }
    Ok(Outcome::Data(truncate(d, alloc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::Identity;

    fn lu() -> LunInfo {
        LunInfo::new(0, 1_000_003, Identity::lio("file:///tmp/x"))
    }

    fn port() -> TargetPort {
        TargetPort::new("iqn.2023-06.csm.iscsi:t", 1)
    }

    fn run(cdb: &[u8], lu: Option<&LunInfo>) -> Outcome {
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let p = port();
        execute(
            &c,
            &ExecCtx {
                lu,
                luns: &[0, 3],
                port: &p,
                access: AccessState::ActiveOptimized,
            },
        )
    }

    #[test]
    fn capacity_rounds_up_to_whole_blocks() {
        let l = lu();
        assert_eq!(l.blocks(), 1954);
        let Outcome::Data(d) = run(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32], Some(&l))
        else {
            panic!()
        };
        assert_eq!(u64::from_be_bytes(d[..8].try_into().unwrap()), 1953);
        assert_eq!(&d[8..12], &512u32.to_be_bytes());
        let Outcome::Data(d) = run(&[0x25], Some(&l)) else {
            panic!()
        };
        assert_eq!(&d[..4], &1953u32.to_be_bytes());
    }

    #[test]
    fn reads_are_range_checked() {
        let l = lu();
        assert_eq!(
            run(&[0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0], Some(&l)),
            Outcome::Read {
                offset: 512,
                len: 1024
            }
        );
        assert_eq!(
            run(&[0x28, 0, 0, 0, 0x07, 0xa1, 0, 0, 2, 0], Some(&l)),
            Outcome::Check(Sense::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            run(&[0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&l)),
            Outcome::Good
        );
        let mut r16 = [0u8; 16];
        r16[0] = 0x88;
        r16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        r16[13] = 1;
        assert_eq!(run(&r16, Some(&l)), Outcome::Check(Sense::LBA_OUT_OF_RANGE));
    }

    #[test]
    fn writes_are_write_protected_and_unknown_is_invalid_opcode() {
        let l = lu();
        let writes: [&[u8]; 8] = [
            &[0x0a, 0, 0, 0, 1, 0],
            &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            &[0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0x41, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            &[0x42],
            &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        ];
        for cdb in writes {
            assert_eq!(
                run(cdb, Some(&l)),
                Outcome::Check(Sense::WRITE_PROTECTED),
                "{cdb:?}"
            );
        }
        // Bad fields and ranges are reported before write protection.
        assert_eq!(
            run(&[0x2a, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], Some(&l)),
            Outcome::Check(Sense::bad_cdb_field(1, Some(7)))
        );
        assert_eq!(
            run(&[0x2a, 0, 0, 0, 0x07, 0xa2, 0, 0, 1, 0], Some(&l)),
            Outcome::Check(Sense::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&l)),
            Outcome::Good
        );
        assert_eq!(
            run(&[0xc7], Some(&l)),
            Outcome::Check(Sense::INVALID_OPCODE)
        );
    }

    #[test]
    fn missing_lu() {
        let Outcome::Data(d) = run(&[0x12, 0, 0, 0, 36], None) else {
            panic!()
        };
        assert_eq!(d[0], 0x7f);
        assert_eq!(run(&[0x00], None), Outcome::Check(Sense::LU_NOT_SUPPORTED));
        let Outcome::Data(d) = run(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0], None) else {
            panic!()
        };
        assert_eq!(&d[..4], &16u32.to_be_bytes());
        assert_eq!(&d[16..18], &[0, 3]);
    }

    #[test]
    fn mode_sense_reports_write_protect() {
        let l = lu();
        let Outcome::Data(d) = run(&[0x1a, 0, 0x3f, 0, 192], Some(&l)) else {
            panic!()
        };
        assert_eq!(d[2] & 0x80, 0x80);
        assert_eq!(d[0] as usize, d.len() - 1);
        let Outcome::Data(d) = run(&[0x5a, 0, 0x08, 0, 0, 0, 0, 0, 255], Some(&l)) else {
            panic!()
        };
        assert_eq!(d[3] & 0x80, 0x80);
        assert_eq!(u16::from_be_bytes([d[0], d[1]]) as usize, d.len() - 2);
        assert_eq!(d[16], 0x08);
        assert!(matches!(
            run(&[0x1a, 0, 0xc8, 0, 192], Some(&l)),
            Outcome::Check(_)
        ));
    }

    #[test]
    fn vpd_pages() {
        let l = lu();
        for page in inquiry::SUPPORTED_VPD {
            let Outcome::Data(d) = run(&[0x12, 1, page, 1, 0], Some(&l)) else {
                panic!()
            };
            assert_eq!(d[1], page);
            assert_eq!(u16::from_be_bytes([d[2], d[3]]) as usize, d.len() - 4);
        }
        let Outcome::Data(d) = run(&[0x12, 1, 0x83, 1, 0], Some(&l)) else {
            panic!()
        };
        assert_eq!(&d[4..8], &[0x01, 0x03, 0x00, 0x10]);
        assert_eq!(format!("3{}", hex::encode(&d[8..24])), l.identity.wwid());
        assert!(matches!(
            run(&[0x12, 1, 0x99, 1, 0], Some(&l)),
            Outcome::Check(_)
        ));
    }

    #[test]
    fn report_supported_opcodes_single() {
        let l = lu();
        let Outcome::Data(d) = run(&[0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 1, 0], Some(&l)) else {
            panic!()
        };
        assert_eq!(d[1] & 7, 3);
        assert_eq!(d[4], 0x28);
        let Outcome::Data(d) = run(&[0xa3, 0x0c, 0x01, 0xc7, 0, 0, 0, 0, 1, 0], Some(&l)) else {
            panic!()
        };
        assert_eq!(d[1] & 7, 1);
        let Outcome::Data(d) = run(&[0xa3, 0x0c, 0x00, 0, 0, 0, 0, 0x10, 0, 0], Some(&l)) else {
            panic!()
        };
        assert_eq!(
            u32::from_be_bytes(d[..4].try_into().unwrap()) as usize,
            d.len() - 4
        );
    }
}
