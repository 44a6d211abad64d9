//! Login/text key=value parsing and negotiation of every parsed key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3lun::login::{parse_pairs, NegotiationPrefs, Negotiator};

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = parse_pairs(data, 256) else {
        return;
    };
    let mut neg = Negotiator::new(NegotiationPrefs::default());
    for (k, v) in &pairs {
        let _ = neg.offer(k, v);
    }
});
