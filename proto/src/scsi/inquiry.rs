//! Standard INQUIRY data and the VPD pages (SPC-4 section 7.8) a Linux initiator reads:
//! 0x00, 0x80, 0x83 (with ALUA target port group and relative port designators),
//! 0xB0, 0xB1, 0xB2.

use super::{LunInfo, Sense, TargetPort};

/// Peripheral qualifier 0, device type 0 (direct access block device).
const DISK: u8 = 0x00;
/// Peripheral qualifier 3: no LU at this LUN (SPC-4 section 6.6.2).
pub const NO_LU: u8 = 0x7f;

pub const SUPPORTED_VPD: [u8; 6] = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

/// Largest READ we accept in one command, in blocks (advertised in VPD 0xB0).
pub const MAX_TRANSFER_BLOCKS: u32 = 8192;

pub fn standard(lu: Option<&LunInfo>) -> Vec<u8> {
    let mut d = vec![0u8; 66];
    d[0] = if lu.is_some() { DISK } else { NO_LU };
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HiSup, response data format 2
    d[4] = (d.len() - 5) as u8;
    d[5] = 0x10; // TPGS = 01b: implicit ALUA
    d[7] = 0x02; // CmdQue
    let vendor: &[u8; 8] = lu.map_or(super::identity::VENDOR, |l| &l.identity.vendor);
    d[8..16].copy_from_slice(vendor);
    match lu {
        Some(l) => {
            d[16..32].copy_from_slice(&l.identity.product);
            d[32..36].copy_from_slice(&l.identity.revision);
        }
        None => {
            d[16..32].copy_from_slice(b"s3lun           ");
            d[32..36].copy_from_slice(super::identity::REVISION);
        }
    }
    // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
    for (i, v) in [0x00a0u16, 0x0960, 0x0460, 0x04c0].iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

fn page(code: u8, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(4 + body.len());
    d.extend_from_slice(&[DISK, code]);
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(body);
    d
}

fn designator(proto_codeset: u8, piv_assoc_type: u8, value: &[u8]) -> Vec<u8> {
    let mut d = vec![proto_codeset, piv_assoc_type, 0, value.len() as u8];
    d.extend_from_slice(value);
    d
}

/// A SCSI name string designator value: NUL-terminated, padded to a multiple of 4.
fn name_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

pub fn vpd(page_code: u8, lu: &LunInfo, port: &TargetPort) -> Result<Vec<u8>, Sense> {
    Ok(match page_code {
        0x00 => page(0x00, &SUPPORTED_VPD),
        0x80 => page(0x80, lu.identity.serial.as_bytes()),
        0x83 => {
            let mut body = Vec::new();
            // NAA IEEE Registered Extended, binary, associated with the LU.
            body.extend(designator(0x01, 0x03, &lu.identity.naa));
            // T10 vendor ID: vendor followed by the unit serial, as LIO does.
            let mut t10 = lu.identity.vendor.to_vec();
            t10.extend_from_slice(lu.identity.serial.as_bytes());
            body.extend(designator(0x02, 0x01, &t10));
            // iSCSI (protocol 5), PIV, target port association.
            let rel = [
                0,
                0,
                (port.relative_port >> 8) as u8,
                port.relative_port as u8,
            ];
            body.extend(designator(0x51, 0x94, &rel));
            let tpg = [0, 0, (port.group_id >> 8) as u8, port.group_id as u8];
            body.extend(designator(0x51, 0x95, &tpg));
            let port_name = format!("{},t,0x{:04x}", port.target_name, port.portal_group_tag);
            body.extend(designator(0x53, 0x98, &name_string(&port_name)));
            // Target device name.
            body.extend(designator(0x53, 0xa8, &name_string(&port.target_name)));
            page(0x83, &body)
        }
        0xb0 => {
            let mut b = vec![0u8; 0x3c];
            b[2..4].copy_from_slice(&1u16.to_be_bytes()); // optimal granularity
            b[4..8].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            b[8..12].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes());
            b[12..16].copy_from_slice(&MAX_TRANSFER_BLOCKS.to_be_bytes()); // max prefetch
            page(0xb0, &b)
        }
        0xb1 => {
            let mut b = vec![0u8; 0x3c];
            b[1] = 0x01; // non-rotating medium
            page(0xb1, &b)
        }
        0xb2 => page(0xb2, &[0, 0, 0, 0]),
        _ => return Err(Sense::bad_cdb_field(2, None)),
    })
}
