//! Any bytes as an IPv6 datagram into the MLDv2 join checks (with the fixture's keys and
//! grants): no panic, and nothing but a correctly signed join is ever accepted as one.
#![no_main]
use igmp_ext::fixtures::{Fixture, FixtureGrants6, IFINDEX, NOW};
use igmp_ext::verify6::{verify_mld_datagram, AcceptedMld, MldVerifierConfig};
use igmp_ext::wire::mld::MldPacket;
use igmp_ext::{SliceSet6, UnverifiedMldJoin};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<(Fixture, FixtureGrants6)> = OnceLock::new();
    let (f, grants) = FIXTURE.get_or_init(|| {
        let f = Fixture::new(2);
        let grants = f.grants6(SliceSet6::full());
        (f, grants)
    });
    let config = MldVerifierConfig::default();
    if let Ok(AcceptedMld::Join { join, .. }) =
        verify_mld_datagram(NOW, IFINDEX, data, &config, &f.links6(), grants)
    {
        // Only the fixture members hold keys; a fuzzer cannot forge Ed25519, so an accepted
        // join must come from a seed input, byte for byte signed.
        assert!(f.members.iter().any(|m| m.id == join.member()));
    }
    // The extension parser alone, on the input as an MLD message (and after the 48 bytes of
    // IPv6 and Hop-by-Hop headers); and the set of the entries, built as after a valid
    // signature (which a fuzzer cannot make): within its step budget (issue 13, item 6).
    for msg in [data, data.get(48..).unwrap_or_default()] {
        if let Ok(p) = MldPacket::new_checked(msg) {
            if let Ok(Some(join)) = UnverifiedMldJoin::parse(&p, |_| true) {
                let _ = (join.claims().slices(), join.signed_len(), join.claimed_member());
            }
        }
    }
});
