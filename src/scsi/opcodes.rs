//! The table behind REPORT SUPPORTED OPERATION CODES (SPC-4 section 6.35): every
//! command this target implements, with its CDB usage map.

use super::cdb::op;
use super::Sense;

pub struct Supported {
    pub opcode: u8,
    pub service_action: Option<u8>,
    /// CDB usage data: which bits of each CDB byte the command looks at.
    pub usage: &'static [u8],
}

const fn s(opcode: u8, service_action: Option<u8>, usage: &'static [u8]) -> Supported {
    Supported {
        opcode,
        service_action,
        usage,
    }
}

pub static SUPPORTED: &[Supported] = &[
    s(op::TEST_UNIT_READY, None, &[0x00, 0, 0, 0, 0, 0x07]),
    s(op::REQUEST_SENSE, None, &[0x03, 0x01, 0, 0, 0xff, 0x07]),
    s(op::READ_6, None, &[0x08, 0x1f, 0xff, 0xff, 0xff, 0x07]),
    s(op::WRITE_6, None, &[0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07]),
    s(op::INQUIRY, None, &[0x12, 0x01, 0xff, 0xff, 0xff, 0x07]),
    s(
        op::MODE_SENSE_6,
        None,
        &[0x1a, 0x08, 0xff, 0xff, 0xff, 0x07],
    ),
    s(
        op::START_STOP_UNIT,
        None,
        &[0x1b, 0x01, 0, 0x0f, 0xf7, 0x07],
    ),
    s(op::PREVENT_ALLOW, None, &[0x1e, 0, 0, 0, 0x03, 0x07]),
    s(
        op::READ_CAPACITY_10,
        None,
        &[0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07],
    ),
    s(
        op::READ_10,
        None,
        &[0x28, 0xe6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::WRITE_10,
        None,
        &[0x2a, 0xe2, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::VERIFY_10,
        None,
        &[0x2f, 0xe6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::PRE_FETCH_10,
        None,
        &[0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::SYNC_CACHE_10,
        None,
        &[0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::WRITE_SAME_10,
        None,
        &[0x41, 0xea, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::UNMAP,
        None,
        &[0x42, 0x01, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::PERSISTENT_RESERVE_IN,
        None,
        &[0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07],
    ),
    s(
        op::MODE_SENSE_10,
        None,
        &[0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07],
    ),
    s(
        op::READ_16,
        None,
        &[
            0x88, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::WRITE_16,
        None,
        &[
            0x8a, 0xe2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::VERIFY_16,
        None,
        &[
            0x8f, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::PRE_FETCH_16,
        None,
        &[
            0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::SYNC_CACHE_16,
        None,
        &[
            0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::WRITE_SAME_16,
        None,
        &[
            0x93, 0xeb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::SERVICE_ACTION_IN_16,
        Some(op::SA_READ_CAPACITY_16),
        &[
            0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07,
        ],
    ),
    s(
        op::REPORT_LUNS,
        None,
        &[0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
    ),
    s(
        op::MAINTENANCE_IN,
        Some(op::SA_REPORT_SUPPORTED_OPCODES),
        &[
            0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07,
        ],
    ),
    s(
        op::READ_DEFECT_DATA_10,
        None,
        &[0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x07],
    ),
    s(
        op::WRITE_VERIFY_10,
        None,
        &[0x2e, 0xe6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07],
    ),
    s(
        op::WRITE_VERIFY_16,
        None,
        &[
            0x8e, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0x07,
        ],
    ),
    s(
        op::SERVICE_ACTION_IN_16,
        Some(op::SA_GET_LBA_STATUS),
        &[
            0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0x07,
        ],
    ),
    s(
        op::MAINTENANCE_IN,
        Some(op::SA_REPORT_TARGET_PORT_GROUPS),
        &[0xa3, 0xea, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
    ),
    s(
        op::VERIFY_12,
        None,
        &[
            0xaf, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ],
    ),
    s(
        op::WRITE_VERIFY_12,
        None,
        &[
            0xae, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ],
    ),
    s(
        op::READ_DEFECT_DATA_12,
        None,
        &[0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07],
    ),
    s(
        op::READ_12,
        None,
        &[
            0xa8, 0xe6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ],
    ),
    s(
        op::WRITE_12,
        None,
        &[
            0xaa, 0xe2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07,
        ],
    ),
];

const TIMEOUTS: [u8; 12] = [0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

pub fn report(rctd: bool, options: u8, opcode: u8, sa: u16) -> Result<Vec<u8>, Sense> {
    let mut out = Vec::new();
    match options {
        0 => {
            out.extend_from_slice(&[0u8; 4]);
            for c in SUPPORTED {
                out.push(c.opcode);
                out.push(0);
                out.extend_from_slice(&(c.service_action.unwrap_or(0) as u16).to_be_bytes());
                out.push(0);
                let flags =
                    if c.service_action.is_some() { 1 } else { 0 } | if rctd { 2 } else { 0 };
                out.push(flags);
                out.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
                if rctd {
                    out.extend_from_slice(&TIMEOUTS);
                }
            }
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        1..=3 => {
            let has_sa = SUPPORTED
                .iter()
                .any(|c| c.opcode == opcode && c.service_action.is_some());
            // Option 1 names an opcode without service actions; option 2 one with.
            if (options == 1 && has_sa) || (options == 2 && !has_sa) {
                return Err(Sense::bad_cdb_field(2, None));
            }
            let found = SUPPORTED.iter().find(|c| {
                c.opcode == opcode
                    && match c.service_action {
                        Some(a) => options != 1 && a as u16 == sa,
                        None => options != 2,
                    }
            });
            match found {
                Some(c) => {
                    out.extend_from_slice(&[0, 0x03 | if rctd { 0x80 } else { 0 }]);
                    out.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
                    out.extend_from_slice(c.usage);
                    if rctd {
                        out.extend_from_slice(&TIMEOUTS);
                    }
                }
                None => out.extend_from_slice(&[0, 0x01, 0, 0]),
            }
        }
        _ => return Err(Sense::bad_cdb_field(2, None)),
    }
    Ok(out)
}
