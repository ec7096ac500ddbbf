//! When a member sends its signed MLDv2 join for the service's IPv6 group (sans-IO; SPEC.md
//! §3.8, RFC 3810 §6 host rules applied to one group), with the same timers as the IGMPv3 join
//! ([`crate::join_agent`]): a change reported at once and repeated robustness − 1 times within
//! the unsolicited report interval, a query answered within its Maximum Response Delay (at most
//! one answer per `min_answer_interval`), an unprompted refresh every `refresh`.
//!
//! One allocation serves both families (SPEC.md §6.2): unit i of the IPv4 slicing is unit i of
//! the IPv6 site slicing, so the claim is the IPv4 claim's units mapped by number, and so are
//! the units it stands by for (SPEC.md §5.5). It names the same beacon chains as the IPv4 join:
//! one beacon stream proves the member alive for both families.
//!
//! Nothing is sent before the link is known ([`MldAgent::set_link`]): the link-local sender,
//! once duplicate address detection is done (before, Linux sends from `::`, which routers
//! ignore), and the interface's global on-link prefix, which the LINK sub-TLV names.

use crate::beaconer::SharedBeaconer;
use crate::join_agent::report_schedule::ReportSchedule;
use crate::join_agent::AgentConfig;
use ed25519_dalek::SigningKey;
use igmp_ext::alloc::Slicing;
use igmp_ext::join::{BuildError, SliceEntry6, MAX_STANDBY_BITS, NONCE_LEN};
use igmp_ext::mld_join::{build_mld_datagram, build_signed_mld_report, JoinClaims6};
use igmp_ext::wire::mld::{decode_max_resp_code, MessageType, MldPacket};
use igmp_ext::{
    AllocationEpoch, Clock, Instant, MemberCertificate, Slice6, SliceEntry, SliceSet, SliceSet6,
};
use std::net::Ipv6Addr;
use std::time::Duration;

/// The link a join is sent on: our link-local address (DAD done) and the on-link prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link6 {
    pub sender: Ipv6Addr,
    pub prefix: Slice6,
}

/// Schedules and builds one member's MLDv2 joins for its IPv6 group.
#[derive(Debug)]
pub struct MldAgent {
    config: AgentConfig,
    key: SigningKey,
    cert: MemberCertificate,
    group: Ipv6Addr,
    slicing: Slicing,
    link: Option<Link6>,
    /// The claimed IPv6 units one by one, sent as a UNITS bitmap, or merged where siblings as
    /// SLICES for a slicing finer than a bitmap takes ([`MAX_STANDBY_BITS`]).
    entries: Vec<SliceEntry6>,
    /// The IPv6 units this member takes if their owner fails: the IPv4 standby's, by number.
    standby: Vec<SliceEntry6>,
    epoch: AllocationEpoch,
    /// The IPv4 join's beacons, when the member sends them: their chains are named here too.
    beacons: Option<SharedBeaconer>,
    /// Joins sent without their standby units or a liveness anchor to fit the link MTU.
    trimmed: u64,
    schedule: ReportSchedule,
}

/// The IPv6 counterpart of an IPv4 claim: unit i of `slicing` claimed ↔ unit i of the /56 site
/// slicing with as many bits, merged where siblings.
pub fn units6(slicing: Slicing, entries: &[SliceEntry]) -> Vec<SliceEntry6> {
    let set: SliceSet6 = claim_units6(slicing, entries)
        .into_iter()
        .map(|e| e.slice)
        .collect();
    set.iter().copied().map(SliceEntry6::include).collect()
}

/// As [`units6`], one site-slicing unit per IPv4 unit in unit order, not merged: what the
/// join's UNITS bitmap names (SPEC.md §3.8).
pub fn claim_units6(slicing: Slicing, entries: &[SliceEntry]) -> Vec<SliceEntry6> {
    let claimed: SliceSet = entries
        .iter()
        .filter(|e| !e.exclude)
        .map(|e| e.slice)
        .collect();
    let excluded: SliceSet = entries
        .iter()
        .filter(|e| e.exclude)
        .map(|e| e.slice)
        .collect();
    let units6 = SliceSet6::site_slicing(slicing.bits());
    (0..slicing.unit_count())
        .filter(|&i| {
            let base = slicing.unit(i).value();
            claimed.contains(base) && !excluded.contains(base)
        })
        .filter_map(|i| units6.get(i).copied())
        .map(SliceEntry6::include)
        .collect()
}

/// The IPv6 counterparts of standby units, one site-slicing unit per IPv4 unit (not merged:
/// the STANDBY bitmap names units of one mask).
pub fn standby_units6(slicing: Slicing, standby: &[SliceEntry]) -> Vec<SliceEntry6> {
    let units6 = SliceSet6::site_slicing(slicing.bits());
    (0..slicing.unit_count())
        .filter(|&i| {
            let base = slicing.unit(i).value();
            standby.iter().any(|e| !e.exclude && e.slice.contains(base))
        })
        .filter_map(|i| units6.get(i).copied())
        .map(SliceEntry6::include)
        .collect()
}

/// An MLD query in an ICMPv6 message (a raw ICMPv6 socket's payload): its group (unspecified
/// for a general query) and Maximum Response Delay; anything else is ignored.
pub fn parse_query6(msg: &[u8]) -> Option<(Ipv6Addr, Duration)> {
    let p = MldPacket::new_checked(msg).ok()?;
    if p.msg_type() != MessageType::Query {
        return None;
    }
    let ms = match p.query_version()? {
        igmp_ext::wire::mld::QueryVersion::V2 => decode_max_resp_code(p.max_resp_code()),
        igmp_ext::wire::mld::QueryVersion::V1 => u32::from(p.max_resp_code()),
    };
    Some((p.group_addr(), Duration::from_millis(u64::from(ms))))
}

impl MldAgent {
    pub fn new(
        config: AgentConfig,
        key: SigningKey,
        cert: MemberCertificate,
        group: Ipv6Addr,
        slicing: Slicing,
    ) -> Self {
        MldAgent {
            config,
            key,
            cert,
            group,
            slicing,
            link: None,
            entries: Vec::new(),
            standby: Vec::new(),
            epoch: AllocationEpoch(0),
            beacons: None,
            trimmed: 0,
            schedule: ReportSchedule::default(),
        }
    }

    /// Names the chains of `beacons` (the IPv4 join agent's: they are not started or stopped
    /// here) in its joins while it holds a claim.
    pub fn with_beacons(mut self, beacons: SharedBeaconer) -> Self {
        self.beacons = Some(beacons);
        self
    }

    /// The IPv6 units it stands by for now.
    pub fn standby(&self) -> &[SliceEntry6] {
        &self.standby
    }

    /// Joins sent without their standby units or a liveness anchor to fit the link MTU.
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }

    pub fn group(&self) -> Ipv6Addr {
        self.group
    }

    pub fn entries(&self) -> &[SliceEntry6] {
        &self.entries
    }

    pub fn link(&self) -> Option<Link6> {
        self.link
    }

    /// The link is known (or changed): joins go from now on, signed for it. A non-link-local
    /// sender is refused (the builder would refuse every join).
    pub fn set_link(&mut self, link: Link6) -> bool {
        if !igmp_ext::mld_join::is_link_local(link.sender) {
            return false;
        }
        self.link = Some(link);
        true
    }

    /// Takes the IPv4 claim's units and standby units, each mapped onto the IPv6 site slicing
    /// unit by unit (standby units one by one, as the STANDBY bitmap names them), at `epoch`.
    pub fn set_claim(
        &mut self,
        now: Instant,
        entries: &[SliceEntry],
        standby: &[SliceEntry],
        epoch: AllocationEpoch,
        random: &mut dyn FnMut() -> u64,
    ) {
        let entries = if self.as_units() {
            claim_units6(self.slicing, entries)
        } else {
            units6(self.slicing, entries)
        };
        let standby = if entries.is_empty() {
            Vec::new()
        } else {
            standby_units6(self.slicing, standby)
        };
        if entries == self.entries && standby == self.standby && epoch == self.epoch {
            return;
        }
        self.entries = entries;
        self.standby = standby;
        self.epoch = epoch;
        let claiming = !self.entries.is_empty();
        self.schedule.changed(now, claiming, &self.config, random);
    }

    /// Whether the claim goes as a UNITS bitmap: a member's scattered units would cost 49 bytes
    /// each as SLICES (46 of them at 8 bits did not fit a 1,500-byte link, EMSGSIZE).
    fn as_units(&self) -> bool {
        u32::from(self.slicing.bits()) <= MAX_STANDBY_BITS
    }

    /// Leaves: an empty claim at the current epoch.
    pub fn leave(&mut self, now: Instant, random: &mut dyn FnMut() -> u64) {
        let epoch = self.epoch;
        self.set_claim(now, &[], &[], epoch, random);
    }

    /// An MLD query heard on the link: general or for our group, answered within `max_delay`
    /// unless an answer is due sooner, never sooner than `min_answer_interval` after the last.
    pub fn handle_query(
        &mut self,
        now: Instant,
        group: Ipv6Addr,
        max_delay: Duration,
        random: &mut dyn FnMut() -> u64,
    ) {
        let ours = group.is_unspecified() || group == self.group;
        if !ours || self.entries.is_empty() {
            return;
        }
        self.schedule.queried(now, max_delay, &self.config, random);
    }

    /// The next moment `poll_transmit` has something to send (none before the link is known).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.link?;
        self.schedule.next()
    }

    /// The next datagram due (IPv6 header, Hop-by-Hop Router Alert, hop limit 1, to ff02::16;
    /// for an IPPROTO_RAW socket), signed with `nonce` and stamped `clock.wall`.
    pub fn poll_transmit(
        &mut self,
        clock: Clock,
        nonce: [u8; NONCE_LEN],
    ) -> Option<Result<Vec<u8>, BuildError>> {
        let link = self.link?;
        let now = clock.mono;
        let record_type = self
            .schedule
            .take_due(now, !self.entries.is_empty(), &self.config)?;
        let mut claims = JoinClaims6 {
            group: self.group,
            record_type,
            entries: self.entries.clone(),
            epoch: self.epoch,
            timestamp: clock.wall,
            nonce,
            link: link.prefix,
            standby: self.standby.clone(),
            liveness: match &self.beacons {
                Some(b) if !self.entries.is_empty() => crate::beaconer::lock(b).anchors(now),
                _ => Vec::new(),
            },
            as_units: self.as_units() && !self.entries.is_empty(),
        };
        // As the IPv4 join (SPEC.md §5.5): a join past the link MTU leaves out its standby
        // units, then the running chain's anchor, rather than not go at all.
        loop {
            let built = build_signed_mld_report(&claims, link.sender, &self.cert, &self.key)
                .map(|mld| build_mld_datagram(link.sender, &mld));
            let too_long = built
                .as_ref()
                .is_ok_and(|d| d.len() > self.config.max_datagram);
            if too_long && !claims.standby.is_empty() {
                claims.standby.clear();
            } else if too_long && !claims.liveness.is_empty() {
                claims.liveness.remove(0);
            } else {
                if too_long || claims.standby.len() < self.standby.len() {
                    self.trimmed += 1;
                }
                return Some(built);
            }
        }
    }
}

#[cfg(test)]
#[path = "mld_agent_tests.rs"]
mod tests;
