//! REPORT SUPPORTED OPERATION CODES (SPC-4 section 6.35), answered from the rows of
//! the command table that carry a CDB usage map.

use super::commands::{CommandSpec, COMMANDS};
use super::Sense;

/// The reported commands with their usage maps.
fn supported() -> impl Iterator<Item = (&'static CommandSpec, &'static [u8])> {
    COMMANDS.iter().filter_map(|c| Some((c, c.usage?)))
}

const TIMEOUTS: [u8; 12] = [0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

pub fn report(rctd: bool, options: u8, opcode: u8, sa: u16) -> Result<Vec<u8>, Sense> {
    let mut out = Vec::new();
    match options {
        0 => {
            out.extend_from_slice(&[0u8; 4]);
            for (c, usage) in supported() {
                out.push(c.opcode);
                out.push(0);
                out.extend_from_slice(&(c.service_action.unwrap_or(0) as u16).to_be_bytes());
                out.push(0);
                let flags =
                    if c.service_action.is_some() { 1 } else { 0 } | if rctd { 2 } else { 0 };
                out.push(flags);
                out.extend_from_slice(&(usage.len() as u16).to_be_bytes());
                if rctd {
                    out.extend_from_slice(&TIMEOUTS);
                }
            }
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        1..=3 => {
            let has_sa = supported().any(|(c, _)| c.opcode == opcode && c.service_action.is_some());
            // Option 1 names an opcode without service actions; option 2 one with.
            if (options == 1 && has_sa) || (options == 2 && !has_sa) {
                return Err(Sense::bad_cdb_field(2, None));
            }
            let found = supported().find(|(c, _)| {
                c.opcode == opcode
                    && match c.service_action {
                        Some(a) => options != 1 && a as u16 == sa,
                        None => options != 2,
                    }
            });
            match found {
                Some((_, usage)) => {
                    out.extend_from_slice(&[0, 0x03 | if rctd { 0x80 } else { 0 }]);
                    out.extend_from_slice(&(usage.len() as u16).to_be_bytes());
                    out.extend_from_slice(usage);
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
