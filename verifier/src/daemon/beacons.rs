//! The daemon's side of liveness beacons (SPEC.md §5.5): what the beacon socket holds goes to
//! the core, with the kernel's drops.

use super::{clocks, Daemon};

impl Daemon {
    /// Hands what the beacon socket holds to the core. The clock is read before the socket:
    /// once it is read empty, the core knows every beacon that arrived by then, and judges
    /// silence up to then only (a stall of this loop after the read is not a member's).
    pub(super) fn read_beacons(&mut self) {
        let (before, core) = (clocks(), &mut self.core);
        let (dropped, empty) = self.beacons.drain(before.mono, |b, from, ifindex| {
            core.handle_beacon(clocks(), b, from, ifindex)
        });
        if dropped > 0 {
            core.handle_beacon_overflow(before, dropped);
        }
        if empty {
            core.handle_beacons_read(before);
        }
        self.flush(clocks());
    }
}
