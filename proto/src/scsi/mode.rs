//! MODE SENSE(6) and MODE SENSE(10) (SPC-4 section 6.11/6.12): header with the
//! write-protect bit, optional block descriptor, and the pages a read-only disk has.

use super::cdb::ModeSenseCdb;
use super::{LunInfo, Sense};

/// Read-write error recovery, caching, control, informational exceptions.
const PAGES: [u8; 4] = [0x01, 0x08, 0x0a, 0x1c];

fn page_body(code: u8, changeable: bool) -> Vec<u8> {
    let len = match code {
        0x08 => 0x12,
        _ => 0x0a,
    };
    let mut p = vec![0u8; 2 + len];
    p[0] = code;
    p[1] = len as u8;
    if changeable {
        return p;
    }
    match code {
        0x0a => {
            p[2] = 0x02; // GLTSD: no implicit log saving
            p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            p[8] = 0xff; // busy timeout period: unlimited
            p[9] = 0xff;
        }
        0x08 => {
            // WCE=0: nothing to cache on a read-only LU; RCD=0: reads may be cached.
        }
        _ => {}
    }
    p
}

pub fn mode_sense(lu: &LunInfo, cdb: &ModeSenseCdb) -> Result<Vec<u8>, Sense> {
    let ModeSenseCdb {
        ten,
        dbd,
        llbaa,
        pc,
        page,
        subpage,
        ..
    } = *cdb;
    if pc == 3 {
        return Err(Sense::SAVING_PARAMETERS_UNSUPPORTED);
    }
    let changeable = pc == 1;
    let mut pages = Vec::new();
    match (page, subpage) {
        (0x3f, 0x00) | (0x3f, 0xff) => {
            for code in PAGES {
                pages.extend(page_body(code, changeable));
            }
        }
        (code, 0x00) if PAGES.contains(&code) => pages.extend(page_body(code, changeable)),
        _ => return Err(Sense::bad_cdb_field(2, None)),
    }

    let blocks = lu.blocks();
    let mut desc = Vec::new();
    if !dbd {
        if llbaa {
            desc.extend_from_slice(&blocks.to_be_bytes());
            desc.extend_from_slice(&[0u8; 4]);
            desc.extend_from_slice(&lu.block_size.to_be_bytes());
        } else {
            let n = u32::try_from(blocks).unwrap_or(u32::MAX);
            desc.extend_from_slice(&n.to_be_bytes());
            desc.push(0);
            desc.extend_from_slice(&lu.block_size.to_be_bytes()[1..]);
        }
    }
    // Device-specific parameter: WP; DPOFUA clear (no write cache to bypass).
    let dev = 0x80;
    let mut out = Vec::new();
    if ten {
        let total = 8 + desc.len() + pages.len();
        out.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        out.extend_from_slice(&[0, dev, if llbaa && !dbd { 1 } else { 0 }, 0]);
        out.extend_from_slice(&(desc.len() as u16).to_be_bytes());
    } else {
        let total = 4 + desc.len() + pages.len();
        out.extend_from_slice(&[(total - 1) as u8, 0, dev, desc.len() as u8]);
    }
    out.extend(desc);
    out.extend(pages);
    Ok(out)
}
