//! Any bytes as a liveness beacon, a standby notice or a join's liveness anchor: no panic, and
//! a decoded beacon re-encodes to the same bytes. A decoded beacon is checked against a chain the
//! fuzzer cannot know the next value of: it never advances, whatever its index (the gap bound
//! caps the hashes one beacon costs).
#![no_main]
use igmp_ext::liveness::{Beacon, ChainProgress, HashChain, LivenessAnchor, StandbyNotice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = StandbyNotice::decode(data);
    let _ = LivenessAnchor::decode(data);
    if let Ok(b) = Beacon::decode(data) {
        assert_eq!(&b.encode()[8..], &data[8..], "every field but the reserved bytes round-trips");
        let chain = HashChain::new([0x42; 16], b.chain, 10, 4);
        let mut progress = ChainProgress::from(chain.anchor(0).expect("index 0"));
        // The seed's chain value at an index the fuzzer names is the only way forward; values
        // it makes up do not hash to the anchor.
        if b.index >= 1 && b.index < 4 && chain.value(b.index) == Some(b.value) {
            assert!(progress.advance(&b, 64).is_ok());
        } else {
            assert!(progress.advance(&b, 64).is_err());
        }
    }
});
