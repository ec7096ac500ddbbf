//! Any bytes as a member certificate: no panic.
#![no_main]
use igmp_ext::UnverifiedCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = UnverifiedCertificate::decode(data) {
        assert_eq!(c.as_bytes(), data);
    }
});
