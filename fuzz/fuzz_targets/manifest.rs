//! Image manifests (JSON from S3): any bytes give a root filesystem or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = s3lun::catalog::manifest::rootfs(data);
});
