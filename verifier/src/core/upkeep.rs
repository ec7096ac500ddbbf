//! How claims are kept honest between joins (SPEC.md §5.4 step 5 and §9.7): held through
//! silence the router caused, dropped when the keys stop backing them.

use super::*;

impl Router {
    /// The keys may have changed (the daemon calls this once a second): claims whose member key
    /// was revoked or whose issuer was retired are dropped and their slices withdrawn from the
    /// kernel now, not one claim hold after the member's last join (SPEC.md §9.7).
    pub fn handle_keys(&mut self, now: impl Into<Clock>, keys: &dyn KeySource) {
        let clock: Clock = now.into();
        let now = timers(clock);
        self.note_usable_keys(clock.wall, keys);
        let revoked = self.verifier.revalidate(clock, keys);
        if !revoked.is_empty() {
            self.sync_liveness(clock);
        }
        for change in revoked {
            self.ask_again(now, change.group);
            self.events.push_back(Event::ClaimsRevoked {
                group: change.group,
                lost: change.lost,
            });
            self.replan(now, Change::Ownership(change.group));
        }
        self.control_keys(clock, keys);
        self.run_querier(now);
        self.update_announcements();
    }

    /// The kernel dropped `dropped` datagrams at the IGMP socket's full queue (a flood faster
    /// than we read). Any of them may have been a refresh, and there is no telling whose, so
    /// every claim is kept one hold from now (SPEC.md §5.4): a flood cannot expire a live
    /// member's claim by outrunning the socket either. A later epoch still takes slices at once.
    pub fn handle_socket_overflow(&mut self, now: impl Into<Clock>, dropped: u64) {
        let clock: Clock = now.into();
        self.stats.socket_drops += dropped;
        // A lost join may have carried a liveness chain's hand-over: nobody is found dead for
        // the silence up to now either (SPEC.md §5.5).
        self.note_drops(clock.mono);
        self.stats.claims_held_unverified += self.verifier.hold_all_unheard(clock.mono) as u64;
    }

    /// The kernel dropped `dropped` datagrams at the MLD socket's full queue: as for the IGMP
    /// socket, every IPv6 claim is kept one hold from now (SPEC.md §5.6), so a flood that
    /// outruns the MLD socket cannot expire a live member's IPv6 claim. IPv6 claims carry no
    /// liveness anchors, so nobody's beacons are excused for it.
    pub fn handle_mld_socket_overflow(&mut self, now: impl Into<Clock>, dropped: u64) {
        let clock: Clock = now.into();
        self.stats.mld_socket_drops += dropped;
        self.stats.claims_held_unverified += self.mld.verifier.hold_all_unheard(clock.mono) as u64;
    }
}
