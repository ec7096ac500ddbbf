//! Any bytes as a moved-session state transfer (SPEC.md §11.5): decoding never panics, and a
//! decoded transfer survives its own encoding unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../src/session_state.rs"]
#[allow(dead_code)]
mod session_state;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = session_state::StateTransfer::decode(data) {
        assert_eq!(session_state::StateTransfer::decode(&t.encode()), Ok(t));
    }
});
