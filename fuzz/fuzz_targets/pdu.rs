//! BHS/PDU framing and parsing: any byte stream, under every digest setting, decodes
//! into PDUs or errors, and every PDU that decodes encodes again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use s3lun::pdu::framing::encode_to_vec;
use s3lun::pdu::{decode, FrameConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let cfg = FrameConfig {
        header_digest: mode & 1 != 0,
        data_digest: mode & 2 != 0,
        max_data_segment: if mode & 4 != 0 { 8192 } else { 262_144 },
    };
    let mut buf = BytesMut::from(stream);
    while let Ok(Some(pdu)) = decode(&mut buf, &cfg) {
        let again = encode_to_vec(&pdu.header, &pdu.data, &cfg);
        let mut rb = BytesMut::from(&again[..]);
        let back = decode(&mut rb, &cfg);
        assert!(
            matches!(back, Ok(Some(_))),
            "a decoded PDU must encode into a decodable one: {:?}",
            pdu.header
        );
    }
});
