//! The daemon's side of liveness beacons (SPEC.md §5.5): what the beacon socket holds goes to
//! the core, with the kernel's drops.

use super::{clocks, Daemon};

impl Daemon {
    /// Hands what the beacon socket holds to the core.
    pub(super) fn read_beacons(&mut self) {
        let (now, core) = (clocks(), &mut self.core);
        let dropped = self.beacons.drain(now.mono, |b, from, ifindex| {
            core.handle_beacon(now, b, from, ifindex)
        });
        if dropped > 0 {
            core.handle_beacon_overflow(now, dropped);
        }
        self.flush(now);
    }
}
