//! CDB decoding through the command table: every READ size, fields refused with
//! sense, and no panic on any 16 bytes.

use super::decode;
use crate::scsi::cdb::*;
use proptest::prelude::*;

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

#[test]
fn reads_of_every_size() {
    assert_eq!(
        decode(&cdb(&[0x08, 0x01, 0x02, 0x03, 0x00])).unwrap(),
        Command::Read {
            lba: 0x10203,
            blocks: 256
        }
    );
    assert_eq!(
        decode(&cdb(&[0x28, 0, 0, 0, 0, 9, 0, 0, 8, 0])).unwrap(),
        Command::Read { lba: 9, blocks: 8 }
    );
    assert_eq!(
        decode(&cdb(&[0xa8, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])).unwrap(),
        Command::Read {
            lba: 256,
            blocks: 256
        }
    );
    assert_eq!(
        decode(&cdb(&[0x88, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0])).unwrap(),
        Command::Read {
            lba: 1 << 32,
            blocks: 16
        }
    );
    assert!(decode(&cdb(&[0x28, 0x20])).is_err());
}

#[test]
fn inquiry_checks_fields() {
    assert!(decode(&cdb(&[0x12, 0, 0x80, 0, 36])).is_err());
    assert!(decode(&cdb(&[0x12, 2, 0, 0, 36])).is_err());
    assert_eq!(
        decode(&cdb(&[0x12, 1, 0x83, 1, 0])).unwrap(),
        Command::Inquiry {
            evpd: true,
            page: 0x83,
            alloc: 256
        }
    );
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::array::uniform16(any::<u8>())) {
        let _ = decode(&bytes);
    }
}
