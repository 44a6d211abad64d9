//! The SCSI command table, as tgt's `sbc.c` keeps one: for each command this target
//! knows, its decoder, the CDB usage map REPORT SUPPORTED OPERATION CODES returns,
//! whether it may run while another I_T nexus holds a reservation (SPC-2 table 32),
//! and whether it is answered while a unit attention is pending (SAM-5 5.14).
//! Adding a command is a row here, its decoder in [`super::cdb`] and its execution
//! in [`super::exec`]. Opcodes with no row are INVALID COMMAND OPERATION CODE.

use super::alua::Access;
use super::cdb::{self, op, Command};
use super::Sense;

/// May the command run for a nexus other than the reservation holder?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Allowed,
    Conflicts,
}

/// Does a pending unit attention stop the command?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// The command gets CHECK CONDITION with the unit attention, which is cleared.
    Reports,
    /// The command runs; the unit attention stays (INQUIRY, REPORT LUNS, REQUEST
    /// SENSE, which reports it itself).
    Bypasses,
}

pub struct CommandSpec {
    pub opcode: u8,
    /// The service action (CDB byte 1, low five bits) for opcodes that carry one.
    pub service_action: Option<u8>,
    pub decode: fn(&[u8; 16]) -> Result<Command, Sense>,
    /// CDB usage data (which bits of each byte the command looks at), for the
    /// commands REPORT SUPPORTED OPERATION CODES lists.
    pub usage: Option<&'static [u8]>,
    pub reservation: Reservation,
    pub attention: Attention,
    /// The ALUA states it runs in (SPC-4 5.15.2.4).
    pub access: Access,
}

/// Every command, in the order REPORT SUPPORTED OPERATION CODES lists them.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        opcode: op::TEST_UNIT_READY,
        service_action: None,
        decode: cdb::test_unit_ready,
        usage: Some(&[0x00, 0, 0, 0, 0, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::REQUEST_SENSE,
        service_action: None,
        decode: cdb::request_sense,
        usage: Some(&[0x03, 0x01, 0, 0, 0xff, 0x07]),
        reservation: Reservation::Allowed,
        attention: Attention::Bypasses,
        access: Access::Always,
    },
    CommandSpec {
        opcode: op::READ_6,
        service_action: None,
        decode: cdb::read_6,
        usage: Some(&[0x08, 0x1f, 0xff, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_6,
        service_action: None,
        decode: cdb::write_unranged,
        usage: Some(&[0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::INQUIRY,
        service_action: None,
        decode: cdb::inquiry,
        usage: Some(&[0x12, 0x01, 0xff, 0xff, 0xff, 0x07]),
        reservation: Reservation::Allowed,
        attention: Attention::Bypasses,
        access: Access::Always,
    },
    CommandSpec {
        opcode: op::MODE_SENSE_6,
        service_action: None,
        decode: cdb::mode_sense,
        usage: Some(&[0x1a, 0x08, 0xff, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Standby,
    },
    CommandSpec {
        opcode: op::START_STOP_UNIT,
        service_action: None,
        decode: cdb::start_stop_unit,
        usage: Some(&[0x1b, 0x01, 0, 0x0f, 0xf7, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::PREVENT_ALLOW,
        service_action: None,
        decode: cdb::prevent_allow,
        usage: Some(&[0x1e, 0, 0, 0, 0x03, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::READ_CAPACITY_10,
        service_action: None,
        decode: cdb::read_capacity_10,
        usage: Some(&[0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::READ_10,
        service_action: None,
        decode: cdb::read,
        usage: Some(&[0x28, 0xe6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_10,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[0x2a, 0xe2, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::VERIFY_10,
        service_action: None,
        decode: cdb::verify,
        usage: Some(&[0x2f, 0xe6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::PRE_FETCH_10,
        service_action: None,
        decode: cdb::pre_fetch,
        usage: Some(&[0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::SYNC_CACHE_10,
        service_action: None,
        decode: cdb::sync_cache,
        usage: Some(&[0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_SAME_10,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[0x41, 0xea, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::UNMAP,
        service_action: None,
        decode: cdb::write_unranged,
        usage: Some(&[0x42, 0x01, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::PERSISTENT_RESERVE_IN,
        service_action: None,
        decode: cdb::persistent_reserve_in,
        usage: Some(&[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]),
        reservation: Reservation::Allowed,
        attention: Attention::Reports,
        access: Access::Standby,
    },
    CommandSpec {
        opcode: op::MODE_SENSE_10,
        service_action: None,
        decode: cdb::mode_sense,
        usage: Some(&[0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Standby,
    },
    CommandSpec {
        opcode: op::READ_16,
        service_action: None,
        decode: cdb::read,
        usage: Some(&[
            0x88, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_16,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[
            0x8a, 0xe2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::VERIFY_16,
        service_action: None,
        decode: cdb::verify,
        usage: Some(&[
            0x8f, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::PRE_FETCH_16,
        service_action: None,
        decode: cdb::pre_fetch,
        usage: Some(&[
            0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::SYNC_CACHE_16,
        service_action: None,
        decode: cdb::sync_cache,
        usage: Some(&[
            0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_SAME_16,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[
            0x93, 0xeb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::SERVICE_ACTION_IN_16,
        service_action: Some(op::SA_READ_CAPACITY_16),
        decode: cdb::read_capacity_16,
        usage: Some(&[
            0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::REPORT_LUNS,
        service_action: None,
        decode: cdb::report_luns,
        usage: Some(&[0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        reservation: Reservation::Allowed,
        attention: Attention::Bypasses,
        access: Access::Always,
    },
    CommandSpec {
        opcode: op::MAINTENANCE_IN,
        service_action: Some(op::SA_REPORT_SUPPORTED_OPCODES),
        decode: cdb::report_supported_opcodes,
        usage: Some(&[
            0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Standby,
    },
    CommandSpec {
        opcode: op::READ_DEFECT_DATA_10,
        service_action: None,
        decode: cdb::read_defect_data_10,
        usage: Some(&[0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_VERIFY_10,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[0x2e, 0xe6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_VERIFY_16,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[
            0x8e, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::SERVICE_ACTION_IN_16,
        service_action: Some(op::SA_GET_LBA_STATUS),
        decode: cdb::get_lba_status,
        usage: Some(&[
            0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::MAINTENANCE_IN,
        service_action: Some(op::SA_REPORT_TARGET_PORT_GROUPS),
        decode: cdb::report_target_port_groups,
        usage: Some(&[0xa3, 0xea, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        reservation: Reservation::Allowed,
        attention: Attention::Reports,
        access: Access::Always,
    },
    CommandSpec {
        opcode: op::VERIFY_12,
        service_action: None,
        decode: cdb::verify,
        usage: Some(&[
            0xaf, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_VERIFY_12,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[
            0xae, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::READ_DEFECT_DATA_12,
        service_action: None,
        decode: cdb::read_defect_data_12,
        usage: Some(&[0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::READ_12,
        service_action: None,
        decode: cdb::read,
        usage: Some(&[
            0xa8, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::WRITE_12,
        service_action: None,
        decode: cdb::write,
        usage: Some(&[
            0xaa, 0xe2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ]),
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::FORMAT_UNIT,
        service_action: None,
        decode: cdb::write_unranged,
        usage: None,
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::REASSIGN_BLOCKS,
        service_action: None,
        decode: cdb::write_unranged,
        usage: None,
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::COMPARE_AND_WRITE,
        service_action: None,
        decode: cdb::compare_and_write,
        usage: None,
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
    CommandSpec {
        opcode: op::ORWRITE_16,
        service_action: None,
        decode: cdb::write,
        usage: None,
        reservation: Reservation::Conflicts,
        attention: Attention::Reports,
        access: Access::Active,
    },
];

/// Decode a CDB (at least 16 bytes are always available from the BHS) with the
/// decoder its row names; an opcode with no row is [`Command::Unsupported`].
pub fn decode(cdb: &[u8; 16]) -> Result<Command, Sense> {
    match lookup(cdb) {
        Some(spec) => (spec.decode)(cdb),
        None => Ok(Command::Unsupported { opcode: cdb[0] }),
    }
}

/// The row for `cdb`, if this target knows the command.
pub fn lookup(cdb: &[u8; 16]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.opcode == cdb[0] && c.service_action.is_none_or(|sa| sa == cdb[1] & 0x1f))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod decode_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_command_and_usage_maps_start_with_their_opcode() {
        for (i, a) in COMMANDS.iter().enumerate() {
            for b in &COMMANDS[i + 1..] {
                assert!(
                    (a.opcode, a.service_action) != (b.opcode, b.service_action),
                    "opcode {:#04x} twice",
                    a.opcode
                );
            }
            if let Some(u) = a.usage {
                assert_eq!(u[0], a.opcode);
                assert_eq!(u.len(), cdb::cdb_len(a.opcode));
                if let Some(sa) = a.service_action {
                    assert_eq!(u[1] & 0x1f, sa);
                }
            }
        }
    }

    #[test]
    fn unknown_opcodes_and_service_actions_have_no_row() {
        let mut c = [0u8; 16];
        c[0] = 0xc0;
        assert!(lookup(&c).is_none());
        c[0] = op::MAINTENANCE_IN;
        c[1] = 0x1f;
        assert!(lookup(&c).is_none());
        c[1] = op::SA_REPORT_TARGET_PORT_GROUPS;
        assert_eq!(
            lookup(&c).map(|s| s.reservation),
            Some(Reservation::Allowed)
        );
    }
}
