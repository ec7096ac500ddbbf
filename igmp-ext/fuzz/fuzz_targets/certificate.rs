//! Any bytes as a member certificate: no panic. The listed slices, IPv4 and IPv6, are also
//! made sets as `verify` would had the group key signed them (a fuzzer cannot sign): within
//! their step budget whatever the masks (issue 13, item 6; `-timeout` catches a budget that
//! does not bound).
#![no_main]
use igmp_ext::slice::StepBudget;
use igmp_ext::{SiteId, SliceSet, SliceSet6, UnverifiedCertificate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = UnverifiedCertificate::decode(data) {
        assert_eq!(c.as_bytes(), data);
        // Site 0 is no site: a router certificate naming it never decodes.
        assert_ne!(c.unverified_site(), Some(SiteId(0)));
        let listed = &c.unverified_body().slices;
        let _ = SliceSet::try_from_slices(listed, &mut StepBudget::for_slices(listed.len()));
        let listed6 = &c.unverified_ipv6().slices;
        let _ = SliceSet6::try_from_slices(listed6, &mut StepBudget::for_slices(listed6.len()));
    }
});
