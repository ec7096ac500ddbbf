//! Any bytes as a member certificate: no panic. The listed slices are also made a set as
//! `verify` would had the group key signed them (a fuzzer cannot sign): within its step budget
//! whatever the masks (issue 13, item 6; `-timeout` catches a budget that does not bound).
#![no_main]
use igmp_ext::slice::StepBudget;
use igmp_ext::{SliceSet, UnverifiedCertificate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = UnverifiedCertificate::decode(data) {
        assert_eq!(c.as_bytes(), data);
        let listed = &c.unverified_body().slices;
        let _ = SliceSet::try_from_slices(listed, &mut StepBudget::for_slices(listed.len()));
    }
});
