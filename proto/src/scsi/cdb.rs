//! CDB decoding for the commands a read-only disk answers. Decoding never fails on
//! unknown opcodes (they become [`Command::Unsupported`]); it fails with sense only for
//! fields that are invalid in a command we do know.

use super::Sense;

pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const FORMAT_UNIT: u8 = 0x04;
    pub const REASSIGN_BLOCKS: u8 = 0x07;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNC_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNC_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    /// SERVICE ACTION IN(16): GET LBA STATUS.
    pub const SA_GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN: REPORT TARGET PORT GROUPS.
    pub const SA_REPORT_TARGET_PORT_GROUPS: u8 = 0x0a;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_VERIFY_12: u8 = 0xae;

    /// SERVICE ACTION IN(16) service actions.
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
    /// MAINTENANCE IN service actions.
    pub const SA_REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
}

/// MODE SENSE(6) and (10): which pages, in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSenseCdb {
    /// MODE SENSE(10) (longer header, long LBA descriptors allowed).
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptor accepted.
    pub llbaa: bool,
    /// Page control: current, changeable, default, saved.
    pub pc: u8,
    pub page: u8,
    pub subpage: u8,
    pub alloc: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc: usize,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: usize,
    },
    ReportLuns {
        select: u8,
        alloc: usize,
    },
    ReadCapacity10,
    ReadCapacity16 {
        alloc: usize,
    },
    Read {
        lba: u64,
        blocks: u64,
    },
    ModeSense(ModeSenseCdb),
    ReportSupportedOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        alloc: usize,
    },
    SyncCache {
        lba: u64,
        blocks: u64,
    },
    /// PERSISTENT RESERVE IN with its service action.
    PersistentReserveIn {
        sa: u8,
        alloc: usize,
    },
    GetLbaStatus {
        lba: u64,
        alloc: usize,
    },
    ReportTargetPortGroups {
        extended: bool,
        alloc: usize,
    },
    ReadDefectData {
        twelve: bool,
        flags: u8,
        alloc: usize,
    },
    StartStopUnit,
    PreventAllow,
    Verify {
        lba: u64,
        blocks: u64,
        bytchk: u8,
    },
    PreFetch {
        lba: u64,
        blocks: u64,
    },
    /// Any command that would modify the medium, with the blocks it names.
    Write {
        opcode: u8,
        range: Option<(u64, u64)>,
    },
    Unsupported {
        opcode: u8,
    },
}

fn be16(c: &[u8], o: usize) -> u64 {
    u16::from_be_bytes([c[o], c[o + 1]]) as u64
}
fn be32(c: &[u8], o: usize) -> u64 {
    u32::from_be_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]) as u64
}
fn be64(c: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c[o..o + 8]);
    u64::from_be_bytes(b)
}

/// LOGICAL BLOCK ADDRESS and TRANSFER LENGTH where SBC puts them in 10-, 12- and
/// 16-byte CDBs (READ, WRITE, VERIFY, PRE-FETCH, SYNCHRONIZE CACHE, WRITE SAME).
fn lba_and_blocks(c: &[u8; 16]) -> (u64, u64) {
    match cdb_len(c[0]) {
        10 => (be32(c, 2), be16(c, 7)),
        12 => (be32(c, 2), be32(c, 6)),
        _ => (be64(c, 2), be32(c, 10)),
    }
}

/// RDPROTECT/WRPROTECT/VRPROTECT must be zero: no protection information here.
fn no_protection(c: &[u8]) -> Result<(), Sense> {
    if c[1] & 0xe0 != 0 {
        return Err(Sense::bad_cdb_field(1, Some(7)));
    }
    Ok(())
}

/// MODE SENSE reports DPOFUA=0 (a read-only LU has no write cache to bypass), so
/// CDBs that set DPO or FUA are refused (SBC-4 section 6.4).
fn no_dpo_fua(c: &[u8], mask: u8) -> Result<(), Sense> {
    if c[1] & mask != 0 {
        let bit = if c[1] & 0x10 != 0 { 4 } else { 3 };
        return Err(Sense::bad_cdb_field(1, Some(bit)));
    }
    Ok(())
}

/// CDB length implied by the opcode's group code (SPC-4 section 4.2.5.1).
pub fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 16,
    }
}

// One decoder per command (or family sharing a layout), named by the table.

pub(super) fn test_unit_ready(_: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::TestUnitReady)
}

pub(super) fn request_sense(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::RequestSense {
        desc: c[1] & 1 != 0,
        alloc: c[4] as usize,
    })
}

pub(super) fn inquiry(c: &[u8; 16]) -> Result<Command, Sense> {
    if c[1] & 0x02 != 0 {
        // CMDDT is obsolete.
        return Err(Sense::bad_cdb_field(1, Some(1)));
    }
    let evpd = c[1] & 1 != 0;
    if !evpd && c[2] != 0 {
        return Err(Sense::bad_cdb_field(2, None));
    }
    Ok(Command::Inquiry {
        evpd,
        page: c[2],
        alloc: be16(c, 3) as usize,
    })
}

pub(super) fn report_luns(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::ReportLuns {
        select: c[2],
        alloc: be32(c, 6) as usize,
    })
}

pub(super) fn read_capacity_10(c: &[u8; 16]) -> Result<Command, Sense> {
    // PMI without an LBA is the only form still defined.
    if c[8] & 1 == 0 && be32(c, 2) != 0 {
        return Err(Sense::bad_cdb_field(2, None));
    }
    Ok(Command::ReadCapacity10)
}

pub(super) fn read_capacity_16(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::ReadCapacity16 {
        alloc: be32(c, 10) as usize,
    })
}

pub(super) fn get_lba_status(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::GetLbaStatus {
        lba: be64(c, 2),
        alloc: be32(c, 10) as usize,
    })
}

pub(super) fn report_target_port_groups(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::ReportTargetPortGroups {
        extended: (c[1] >> 5) == 1,
        alloc: be32(c, 6) as usize,
    })
}

pub(super) fn persistent_reserve_in(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::PersistentReserveIn {
        sa: c[1] & 0x1f,
        alloc: be16(c, 7) as usize,
    })
}

pub(super) fn read_defect_data_10(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::ReadDefectData {
        twelve: false,
        flags: c[2] & 0x1f,
        alloc: be16(c, 7) as usize,
    })
}

pub(super) fn read_defect_data_12(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::ReadDefectData {
        twelve: true,
        flags: c[1] & 0x1f,
        alloc: be32(c, 6) as usize,
    })
}

pub(super) fn read_6(c: &[u8; 16]) -> Result<Command, Sense> {
    let lba = (((c[1] & 0x1f) as u64) << 16) | be16(c, 2);
    let blocks = if c[4] == 0 { 256 } else { c[4] as u64 };
    Ok(Command::Read { lba, blocks })
}

pub(super) fn read(c: &[u8; 16]) -> Result<Command, Sense> {
    no_protection(c)?;
    no_dpo_fua(c, 0x18)?;
    let (lba, blocks) = lba_and_blocks(c);
    Ok(Command::Read { lba, blocks })
}

pub(super) fn mode_sense(c: &[u8; 16]) -> Result<Command, Sense> {
    let ten = c[0] == op::MODE_SENSE_10;
    Ok(Command::ModeSense(ModeSenseCdb {
        ten,
        dbd: c[1] & 0x08 != 0,
        llbaa: ten && c[1] & 0x10 != 0,
        pc: c[2] >> 6,
        page: c[2] & 0x3f,
        subpage: c[3],
        alloc: if ten { be16(c, 7) } else { c[4] as u64 } as usize,
    }))
}

pub(super) fn report_supported_opcodes(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::ReportSupportedOpcodes {
        rctd: c[2] & 0x80 != 0,
        options: c[2] & 0x07,
        opcode: c[3],
        sa: be16(c, 4) as u16,
        alloc: be32(c, 6) as usize,
    })
}

pub(super) fn sync_cache(c: &[u8; 16]) -> Result<Command, Sense> {
    let (lba, blocks) = lba_and_blocks(c);
    Ok(Command::SyncCache { lba, blocks })
}

pub(super) fn start_stop_unit(_: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::StartStopUnit)
}

pub(super) fn prevent_allow(_: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::PreventAllow)
}

pub(super) fn verify(c: &[u8; 16]) -> Result<Command, Sense> {
    no_protection(c)?;
    no_dpo_fua(c, 0x10)?;
    let bytchk = (c[1] >> 1) & 3;
    if bytchk == 2 {
        return Err(Sense::bad_cdb_field(1, Some(2)));
    }
    let (lba, blocks) = lba_and_blocks(c);
    Ok(Command::Verify {
        lba,
        blocks,
        bytchk,
    })
}

pub(super) fn pre_fetch(c: &[u8; 16]) -> Result<Command, Sense> {
    let (lba, blocks) = lba_and_blocks(c);
    Ok(Command::PreFetch { lba, blocks })
}

/// WRITE, WRITE AND VERIFY, ORWRITE, WRITE SAME: refused later as write protected,
/// after the fields a real disk would check first.
pub(super) fn write(c: &[u8; 16]) -> Result<Command, Sense> {
    no_protection(c)?;
    match c[0] {
        op::WRITE_VERIFY_10 | op::WRITE_VERIFY_12 | op::WRITE_VERIFY_16 => no_dpo_fua(c, 0x10)?,
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => {}
        _ => no_dpo_fua(c, 0x18)?,
    }
    Ok(Command::Write {
        opcode: c[0],
        range: Some(lba_and_blocks(c)),
    })
}

pub(super) fn compare_and_write(c: &[u8; 16]) -> Result<Command, Sense> {
    no_protection(c)?;
    no_dpo_fua(c, 0x18)?;
    // Its NUMBER OF LOGICAL BLOCKS is one byte, at byte 13.
    Ok(Command::Write {
        opcode: c[0],
        range: Some((be64(c, 2), c[13] as u64)),
    })
}

/// Commands that modify the medium without a block range to check.
pub(super) fn write_unranged(c: &[u8; 16]) -> Result<Command, Sense> {
    Ok(Command::Write {
        opcode: c[0],
        range: None,
    })
}
