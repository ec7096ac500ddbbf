//! Router-checked liveness and standby claims (SPEC.md §5.5, issue 16 item 2): each verified
//! member that sends beacons is watched; when its beacons stop and the router dropped nothing
//! that could have been one, its units go to the standbys its epoch named, in the kernel, before
//! the control group has agreed. The verified ownership table is not changed: the data plane
//! follows [`OwnershipTable::failover_view`] of it until the member's next beacon, or until the
//! next epoch's joins decide from the verified table as before.

use super::*;
use igmp_ext::liveness::{Beacon, ChainProgress, LivenessAnchor, StandbyNotice};
use igmp_ext::ownership::OwnershipTable;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;

/// Most hashes one beacon may cost: a member silent longer than this many intervals comes back
/// with its next join (a refresh), which re-anchors its chain.
pub const MAX_GAP: u32 = 64;

/// `[liveness]` in the verifier's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// UDP port of liveness beacons (to 224.0.0.2, all routers on the link).
    pub port: u16,
    /// Beacon intervals without one before a member is found dead (at least 2).
    pub misses: u32,
    /// Steer a dead member's units to its standbys. Off: beacons are still checked and shown.
    pub failover: bool,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            port: 7410,
            misses: 6,
            failover: true,
        }
    }
}

/// How often a standby in force is told again (a lost notice costs it only this long).
const NOTICE_REPEAT: Duration = Duration::from_millis(100);

/// A [`StandbyNotice`] for the daemon to send: UDP to `to`, the heir's beacon socket (the
/// address and port its beacons come from: two daemons on one host each get their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: SocketAddrV4,
    pub notice: StandbyNotice,
}

/// A standby the router steers a dead member's units to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Standing {
    group: Ipv4Addr,
    dead: MemberId,
    heir: SocketAddrV4,
    epoch: u64,
}

/// One watched claim: the chains its join named and when a beacon last proved it alive.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    pub(super) chains: Vec<ChainProgress>,
    interval: Duration,
    /// The last accepted beacon, or when the watch began.
    heard: Instant,
    /// When the last accepted value fell due on the member's own timeline, as far as the
    /// router can tell (never after it arrived): a beacon's hashing work is bounded by the
    /// time since then. Counted from arrivals instead, one late beacon made every on-time one
    /// after it look too far ahead, for good.
    paced: Instant,
    /// The port the member's last accepted beacon came from: where its notices go.
    port: Option<u16>,
    /// A beacon was accepted: only then can the member be found dead (a member whose chain
    /// the router has not seen proven, after a restart of either, is not judged by it).
    proven: bool,
    /// A beacon within the last `misses` intervals: the router vouches for the member, and no
    /// later epoch takes its slices until it releases them (SPEC.md §5.2).
    pub(super) vouched: bool,
    pub(super) dead: bool,
}

/// The router's liveness book: who is watched, who was found dead, and the table the data
/// plane follows meanwhile.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    pub(super) watches: HashMap<(Ipv4Addr, MemberId), Watch>,
    /// A watch was found dead, came back, or its vouching began or lapsed: the IPv6 claims it
    /// judges follow (`liveness6.rs`).
    pub(super) changed6: bool,
    /// The last time a socket the router reads dropped datagrams: silence up to then may be
    /// the router's doing, so it finds nobody dead for it.
    last_drop: Option<Instant>,
    /// When the driver last read the beacon socket empty (sampled before the read): every
    /// beacon sent before then has been handed in. Silence is judged up to here only, so a
    /// stall of the router's own loop between its read and its check finds nobody dead.
    /// `None`: the driver does not say, and silence is judged up to `now`.
    read_until: Option<Instant>,
    /// The failover view while anyone is dead.
    view: Option<OwnershipTable>,
    /// Watches that ended while vouched for: the verifier is told.
    unvouched: Vec<(Ipv4Addr, MemberId)>,
    /// The standbys in force, told again every [`NOTICE_REPEAT`].
    standing: Vec<Standing>,
    told_at: Option<Instant>,
    notices: VecDeque<Notice>,
    pub(super) stats: LivenessStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LivenessStats {
    pub beacons_accepted: u64,
    pub beacons_refused: u64,
    pub members_found_dead: u64,
    pub members_back: u64,
    /// Checks that came too late to judge anyone (the router itself was held up).
    pub late_checks: u64,
}

impl Liveness {
    pub(super) fn view(&self) -> Option<&OwnershipTable> {
        self.view.as_ref()
    }

    /// Whether `member`'s claim on `group` is watched, and dead (`Some(true)`).
    pub(super) fn state(&self, group: Ipv4Addr, member: MemberId) -> Option<bool> {
        self.watches.get(&(group, member)).map(|w| w.dead)
    }

    /// When `w` next changes state: its vouching lapses, or it is found dead.
    fn deadline(&self, w: &Watch, misses: u32) -> Instant {
        let window = w.interval * misses.max(2);
        if w.vouched {
            return w.heard.saturating_add(window);
        }
        let since = self.last_drop.map_or(w.heard, |d| d.max(w.heard));
        since.saturating_add(window)
    }

    /// Follows the verified table: a watch per claim with liveness anchors; a chain the claim's
    /// join names and the watch does not know starts at its anchor. Watches of claims gone, or
    /// without anchors, end.
    fn sync(&mut self, now: Instant, table: &OwnershipTable) {
        let mut seen = std::collections::HashSet::new();
        for group in table.groups() {
            for (member, claim) in table.claims(group) {
                if claim.liveness.is_empty() {
                    continue;
                }
                seen.insert((group, member));
                let anchors = &claim.liveness;
                let w = self
                    .watches
                    .entry((group, member))
                    .or_insert_with(|| Watch {
                        chains: Vec::new(),
                        interval: interval_of(anchors),
                        heard: now,
                        paced: now,
                        port: None,
                        proven: false,
                        vouched: false,
                        dead: false,
                    });
                w.interval = interval_of(anchors);
                // The chain the member beacons on until the one its join names takes over: the
                // last one known that the join does not name.
                let running = w
                    .chains
                    .iter()
                    .rev()
                    .find(|p| anchors.iter().all(|a| a.chain != p.chain))
                    .copied();
                let mut anchored = false;
                let named: Vec<ChainProgress> = anchors
                    .iter()
                    .map(|a| {
                        let known = w.chains.iter().find(|p| p.chain == a.chain);
                        match known {
                            Some(p) if p.index >= a.index => *p,
                            _ => {
                                anchored = true;
                                ChainProgress::from(*a)
                            }
                        }
                    })
                    .collect();
                w.chains = running.into_iter().chain(named).collect();
                // A join signed now named where its chain is now.
                if anchored {
                    w.paced = now;
                }
            }
        }
        let mut unvouched = Vec::new();
        self.watches.retain(|k, w| {
            let kept = seen.contains(k);
            if !kept && w.vouched {
                unvouched.push(*k);
            }
            kept
        });
        self.unvouched.extend(unvouched);
        // A dead member whose claim is gone: the commit that took it tells the heirs.
        let watches = &self.watches;
        self.standing
            .retain(|s| watches.get(&(s.group, s.dead)).is_some_and(|w| w.dead));
    }

    fn tell(&mut self, s: &Standing, active: bool) {
        self.notices.push_back(Notice {
            to: s.heir,
            notice: StandbyNotice {
                group: s.group,
                dead: s.dead,
                epoch: s.epoch,
                active,
            },
        });
    }
}

/// The beacon interval a join's anchors name (the first's; they share the member's setting).
fn interval_of(anchors: &[LivenessAnchor]) -> Duration {
    Duration::from_millis(
        anchors
            .first()
            .map_or(1, |a| u64::from(a.interval_ms.max(1))),
    )
}

impl Router {
    /// One datagram from the beacon socket, from `from` on `ifindex`. Anything that does not
    /// prove a later value of a watched claim's chain, from where that claim is, is counted and
    /// changes nothing.
    pub fn handle_beacon(
        &mut self,
        now: impl Into<Clock>,
        datagram: &[u8],
        from: SocketAddrV4,
        ifindex: u32,
    ) {
        let clock: Clock = now.into();
        let accepted = self.check_beacon(clock, datagram, from, ifindex);
        let stats = &mut self.liveness.stats;
        match accepted {
            Ok(None) => stats.beacons_accepted += 1,
            Ok(Some(group)) => {
                stats.beacons_accepted += 1;
                stats.members_back += 1;
                self.replan(timers(clock), Change::Ownership(Some(group)));
            }
            Err(why) => {
                stats.beacons_refused += 1;
                debug!(%from, ifindex, why, "beacon refused");
            }
        }
        // The IPv6 claims it judges follow, after the IPv4 ones.
        self.follow_liveness6(clock);
    }

    /// `Ok(Some(group))` when the beacon brought a member found dead back.
    fn check_beacon(
        &mut self,
        clock: Clock,
        datagram: &[u8],
        from: SocketAddrV4,
        ifindex: u32,
    ) -> Result<Option<Ipv4Addr>, &'static str> {
        let now = clock.mono;
        let beacon = Beacon::decode(datagram).map_err(|_| "malformed")?;
        let (group, member) = (beacon.group, beacon.member);
        let claim = self
            .verifier
            .ownership()
            .claims(group)
            .find(|(m, _)| *m == member)
            .map(|(_, c)| c)
            .ok_or("no claim")?;
        if claim.sender != *from.ip() || claim.ifindex != ifindex {
            return Err("not from where the claim is");
        }
        let w = self
            .liveness
            .watches
            .get_mut(&(group, member))
            .ok_or("not watched")?;
        // The work a beacon may cost grows with the time since the last value fell due, up to
        // MAX_GAP hashes.
        let elapsed = now.saturating_duration_since(w.paced);
        let expected = (elapsed.as_millis() / w.interval.as_millis().max(1)) as u32;
        let max_gap = expected.saturating_add(4).min(MAX_GAP);
        // The last chain's refusal, for the debug log; no allocation on this path (an on-link
        // host can send beacons as fast as it likes).
        let mut refused = None;
        let mut gap = 0;
        let advanced = w.chains.iter_mut().any(|p| {
            let last = p.index;
            match p.advance(&beacon, max_gap) {
                Ok(()) => {
                    gap = p.index - last;
                    true
                }
                Err(e) => {
                    refused = Some(e);
                    false
                }
            }
        });
        if !advanced {
            debug!(%member, ?refused, "beacon proves no chain the claim names");
            return Err("does not prove a later chain value");
        }
        w.heard = w.heard.max(now);
        w.paced = w.paced.saturating_add(w.interval * gap).min(now);
        w.port = Some(from.port());
        w.proven = true;
        let newly_vouched = !std::mem::replace(&mut w.vouched, true);
        // The chain handed over: the earlier one is done with.
        if let Some(i) = w.chains.iter().position(|p| p.chain == beacon.chain) {
            w.chains.drain(..i);
        }
        if newly_vouched {
            let _ = self.verifier.set_vouched(clock, group, member, true);
            self.liveness.changed6 = true;
        }
        let Some(w) = self.liveness.watches.get_mut(&(group, member)) else {
            return Ok(None);
        };
        if !std::mem::replace(&mut w.dead, false) {
            return Ok(None);
        }
        self.liveness.changed6 = true;
        tracing::info!(%member, %group, "liveness: beacons again; its units go back to it");
        let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.liveness.standing)
            .into_iter()
            .partition(|s| s.group == group && s.dead == member);
        self.liveness.standing = kept;
        for s in &ended {
            self.liveness.tell(s, false);
        }
        self.refresh_failover_view();
        Ok(Some(group))
    }

    /// The beacon socket dropped datagrams at its full queue: no silence until now is held
    /// against anyone.
    pub fn handle_beacon_overflow(&mut self, now: impl Into<Clock>, dropped: u64) {
        let clock: Clock = now.into();
        self.stats.socket_drops += dropped;
        self.note_drops(clock.mono);
    }

    /// The driver read the beacon socket empty, having sampled `now` before the read: every
    /// beacon that arrived by then went to [`Router::handle_beacon`]. Silence after `now` is
    /// not held against anyone until the next such read (SPEC.md §5.5).
    pub fn handle_beacons_read(&mut self, now: impl Into<Clock>) {
        let now = now.into().mono;
        self.liveness.read_until = Some(self.liveness.read_until.map_or(now, |r| r.max(now)));
    }

    pub(super) fn note_drops(&mut self, now: Instant) {
        self.liveness.last_drop = Some(self.liveness.last_drop.map_or(now, |d| d.max(now)));
    }

    /// Watches follow the verified claims (after any change to them), and the IPv6 claims
    /// they judge follow the watches.
    pub(super) fn sync_liveness(&mut self, clock: Clock) {
        self.liveness.sync(clock.mono, self.verifier.ownership());
        for (group, member) in std::mem::take(&mut self.liveness.unvouched) {
            // The claim is gone: nothing of its can wait on it any more.
            let _ = self.verifier.set_vouched(clock, group, member, false);
        }
        self.refresh_failover_view();
        self.sync_liveness6(clock);
    }

    /// Finds the watched members whose beacons stopped (SPEC.md §5.5) and re-points their
    /// units.
    pub(super) fn check_liveness(&mut self, clock: Clock) {
        let repeat = self
            .liveness
            .told_at
            .is_none_or(|t| clock.mono >= t.saturating_add(NOTICE_REPEAT));
        if repeat {
            self.liveness.told_at = Some(clock.mono);
            for s in self.liveness.standing.clone() {
                self.liveness.tell(&s, true);
            }
        }
        let misses = self.config.liveness.misses;
        let mut found = Vec::new();
        let mut lapsed = Vec::new();
        let Liveness {
            watches,
            last_drop,
            read_until,
            ..
        } = &mut self.liveness;
        // Silence is known only up to the last read of the beacon socket that emptied it: what
        // arrived since waits in its queue while the loop is busy, and is no one's silence.
        let judged = read_until.map_or(clock.mono, |r| r.min(clock.mono));
        // A check that comes more than half a window after a member's deadline means the router
        // itself was held up (its CPU, or the whole machine): beacons sent meanwhile may still
        // be in its kernel's receive path, behind the same stall, so an empty socket proves no
        // silence. Nobody is judged on such a check; everyone gets a whole window from now, as
        // after a drop.
        let late = watches.values().any(|w| {
            let since = last_drop.map_or(w.heard, |d| d.max(w.heard));
            let window = w.interval * misses.max(2);
            !w.dead && w.proven && judged > since.saturating_add(window + window / 2)
        });
        if late {
            *last_drop = Some(last_drop.map_or(judged, |d| d.max(judged)));
            self.liveness.stats.late_checks += 1;
            debug!("liveness: this check came late; silence until now is held against nobody");
        }
        let Liveness {
            watches,
            last_drop,
            changed6,
            ..
        } = &mut self.liveness;
        for (&(group, member), w) in watches.iter_mut() {
            // Vouching lapses on the clock as before (SPEC.md §5.2): a flood faster than the
            // socket is read must not keep a dead member's slices from a later epoch.
            if w.vouched && clock.mono >= w.heard.saturating_add(w.interval * misses.max(2)) {
                w.vouched = false;
                lapsed.push((group, member));
                *changed6 = true;
            }
            let since = last_drop.map_or(w.heard, |d| d.max(w.heard));
            if w.dead || !w.proven || judged < since.saturating_add(w.interval * misses.max(2)) {
                continue;
            }
            w.dead = true;
            *changed6 = true;
            // For the log: how long the member was silent, and how late this check came.
            let silent_ms = clock.mono.saturating_duration_since(w.heard).as_millis();
            let late_ms = clock
                .mono
                .saturating_duration_since(since.saturating_add(w.interval * misses.max(2)))
                .as_millis();
            found.push((group, member, silent_ms, late_ms));
        }
        for (group, member) in lapsed {
            if let Some(change) = self.verifier.set_vouched(clock, group, member, false) {
                // A later epoch waited on this member's slices.
                tracing::info!(%member, %group, lost = ?change.lost, "liveness: no longer vouched for; later claims take its slices");
                self.sync_liveness(clock);
                self.replan(timers(clock), Change::Ownership(Some(group)));
            }
        }
        if found.is_empty() {
            self.follow_liveness6(clock);
            return;
        }
        self.liveness.stats.members_found_dead += found.len() as u64;
        self.refresh_failover_view();
        let mut groups: Vec<Ipv4Addr> = found.iter().map(|&(g, ..)| g).collect();
        groups.dedup();
        for (group, member, silent_ms, late_ms) in found {
            let heirs = if self.config.liveness.failover {
                self.heirs(group, member)
            } else {
                Vec::new()
            };
            let to: Vec<SocketAddrV4> = heirs.iter().map(|s| s.heir).collect();
            tracing::warn!(%member, %group, standbys = ?to, silent_ms, late_ms, "liveness: beacons stopped; its units go to their standbys");
            self.events.push_back(Event::MemberSilent { group, member });
            for s in heirs {
                self.liveness.tell(&s, true);
                self.liveness.standing.push(s);
            }
        }
        for group in groups {
            self.replan(timers(clock), Change::Ownership(Some(group)));
        }
        // The IPv6 claims these members hold go to their standbys too, after the IPv4 ones.
        self.follow_liveness6(clock);
    }

    /// The live members whose standby, at `dead`'s epoch, covers some of its units.
    fn heirs(&self, group: Ipv4Addr, dead: MemberId) -> Vec<Standing> {
        let table = self.verifier.ownership();
        let Some((_, gone)) = table.claims(group).find(|(m, _)| *m == dead) else {
            return Vec::new();
        };
        table
            .claims(group)
            .filter(|(m, c)| {
                *m != dead
                    && c.epoch == gone.epoch
                    && c.standby.overlaps(&gone.slices)
                    && self.liveness.state(group, *m) != Some(true)
            })
            // An heir is told at its beacon socket; one that sends no beacons is not told (its
            // local filter drops the units until the commit).
            .filter_map(|(m, c)| {
                let port = self.liveness.watches.get(&(group, m))?.port?;
                Some(Standing {
                    group,
                    dead,
                    heir: SocketAddrV4::new(c.sender, port),
                    epoch: gone.epoch.0,
                })
            })
            .collect()
    }

    /// The next standby notice to send.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.liveness.notices.pop_front()
    }

    /// When the next watched member would be found dead.
    pub(super) fn liveness_deadline(&self) -> Option<Instant> {
        let misses = self.config.liveness.misses;
        self.liveness
            .watches
            .values()
            .filter(|w| w.vouched || (!w.dead && w.proven))
            .map(|w| self.liveness.deadline(w, misses))
            .min()
    }

    fn refresh_failover_view(&mut self) {
        let watches = &self.liveness.watches;
        self.liveness.view = if self.config.liveness.failover {
            self.verifier
                .ownership()
                .failover_view(|g, m| watches.get(&(g, m)).is_some_and(|w| w.dead))
        } else {
            None
        };
    }
}
