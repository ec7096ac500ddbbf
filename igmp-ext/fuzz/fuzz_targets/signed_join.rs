//! Any bytes as a datagram into the whole verification pipeline (with the fixture's keys): no
//! panic, and nothing but a correctly signed join is ever accepted as one.
#![no_main]
use igmp_ext::fixtures::{Fixture, IFINDEX, NOW};
use igmp_ext::{Accepted, JoinVerifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let f = FIXTURE.get_or_init(|| Fixture::new(2));
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    if let Ok(Accepted::Join { join, .. }) = v.handle_datagram(NOW, IFINDEX, data, &f.key_source()) {
        // Only the fixture members hold keys; a fuzzer cannot forge Ed25519, so an accepted join
        // must come from a seed input, byte for byte signed.
        assert!(f.members.iter().any(|m| m.id == join.member()));
    }
    // The extension parser alone, on the IGMP part; and the set of the entries, built as after
    // a valid signature (which a fuzzer cannot make): within its step budget (issue 13, item 6).
    if let Ok(p) = igmp_ext::wire::igmp::IgmpPacket::new_checked(data) {
        if let Ok(Some(join)) = igmp_ext::UnverifiedJoin::parse(&p, |_| true) {
            let _ = join.claims().slices();
        }
    }
});
