//! Per-sender replay and reordering protection: a 64-message sliding window over sequence
//! numbers, as IPsec's anti-replay window (RFC 4303 §3.4.3).

/// Sequence numbers seen from one sender.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest sequence accepted, if any.
    highest: Option<u64>,
    /// Bit i set: `highest - i` was accepted.
    seen: u64,
}

/// How far behind the highest sequence a reordered message may still be accepted.
pub const WINDOW: u64 = 64;

impl ReplayWindow {
    /// True if `seq` is new: not accepted before and not too old. Does not record it.
    pub fn is_fresh(&self, seq: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if seq > h => true,
            Some(h) => {
                let behind = h - seq;
                behind < WINDOW && self.seen & (1 << behind) == 0
            }
        }
    }

    /// The highest sequence accepted.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Records `seq`; call only after every other check passed, so that refused messages change
    /// nothing.
    pub fn record(&mut self, seq: u64) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.seen = 1;
            }
            Some(h) if seq > h => {
                let shift = seq - h;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                } | 1;
                self.highest = Some(seq);
            }
            Some(h) => {
                let behind = h - seq;
                if behind < WINDOW {
                    self.seen |= 1 << behind;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_reorders_and_old() {
        let mut w = ReplayWindow::default();
        for s in [10, 12, 11] {
            assert!(w.is_fresh(s));
            w.record(s);
        }
        assert!(!w.is_fresh(10) && !w.is_fresh(11) && !w.is_fresh(12));
        w.record(100);
        assert!(w.is_fresh(99));
        assert!(!w.is_fresh(100 - WINDOW));
        assert!(!w.is_fresh(12));
        w.record(100 + 1000);
        assert!(w.is_fresh(1099) && !w.is_fresh(1100));
    }
}
