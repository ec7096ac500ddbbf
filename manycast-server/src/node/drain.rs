//! Drain sequencing (SPEC.md §11.6) as a value: when a drain that began at some moment is
//! finished. Pure: the node feeds it commits and what still holds the member back.

use igmp_ext::Instant;
use std::time::Duration;

/// A drain in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    deadline: Instant,
    /// A commit since the drain began left this member without slices.
    emptied: bool,
}

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    /// Still waiting: for the commit that empties the member, moved sessions or connections.
    Waiting,
    /// Emptied, and nothing needs the member any more: it may leave.
    Done,
    /// The drain timeout passed first: leave anyway.
    TimedOut,
}

impl Drain {
    /// A drain beginning at `now`, bounded by `timeout`. `commits` and `slices` are the
    /// member's commits so far and the slices of its last commit.
    pub fn begin(now: Instant, timeout: Duration, commits: u64, slices: usize) -> Drain {
        Drain {
            deadline: now.saturating_add(timeout),
            emptied: Drain::already_emptied(commits, slices),
        }
    }

    /// Whether a drain starts emptied: a member whose last commit left it without slices (an
    /// admin `drain` of it, then SIGTERM) sees no further commit, since its weight 0 changes
    /// nothing, and would otherwise wait out the drain timeout.
    pub fn already_emptied(commits: u64, slices: usize) -> bool {
        commits > 0 && slices == 0
    }

    /// A commit arrived; `no_slices` if it left this member none.
    pub fn on_commit(&mut self, no_slices: bool) {
        self.emptied |= no_slices;
    }

    pub fn emptied(&self) -> bool {
        self.emptied
    }

    /// Where the drain stands at `now`. `held` is whether anything still needs the member:
    /// moved sessions not yet ended or acknowledged, or (VIP mode) TCP connections to the VIP
    /// not known to be gone.
    pub fn state(&self, now: Instant, held: bool) -> DrainState {
        if now >= self.deadline {
            DrainState::TimedOut
        } else if self.emptied && !held {
            DrainState::Done
        } else {
            DrainState::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_starts_emptied_only_after_a_commit_without_slices() {
        assert!(Drain::already_emptied(4, 0));
        assert!(!Drain::already_emptied(4, 12));
        // Not yet committed: the first commit may still give it slices to hand on.
        assert!(!Drain::already_emptied(0, 0));
    }

    #[test]
    fn done_once_emptied_and_nothing_holds_it_or_at_the_deadline() {
        let t0 = Instant(1_000);
        let mut d = Drain::begin(t0, Duration::from_secs(30), 3, 12);
        assert_eq!(d.state(t0, false), DrainState::Waiting);
        d.on_commit(false);
        assert_eq!(d.state(t0, false), DrainState::Waiting);
        d.on_commit(true);
        assert_eq!(d.state(t0, true), DrainState::Waiting);
        assert_eq!(d.state(t0, false), DrainState::Done);
        // A later commit with slices (a resume) does not undo it: the drain saw its empty commit.
        d.on_commit(false);
        assert_eq!(d.state(t0, false), DrainState::Done);
        assert_eq!(d.state(Instant(31_000), true), DrainState::TimedOut);
    }
}
