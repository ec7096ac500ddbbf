//! When a member sends its signed join (sans-IO; RFC 3376 §5.1, §5.2 host rules applied to one
//! protected group). A change of slices or epoch is reported at once as CHANGE_TO_INCLUDE and
//! repeated [robustness − 1] times at random moments within the unsolicited report interval;
//! a query is answered with MODE_IS_INCLUDE after a random delay within its Max Resp Time; the
//! claim is refreshed unprompted every `refresh` so it never expires at a router that stopped
//! querying. Every transmission is signed afresh: the router's replay cache refuses repeats.
//! Timers run on monotonic time; the wall clock only stamps the signed joins (a step of the
//! wall clock moves no report).

use crate::beaconer::SharedBeaconer;
use ed25519_dalek::SigningKey;
use igmp_ext::alloc::Slicing;
use igmp_ext::join::MAX_STANDBY_BITS;
use igmp_ext::join::{build_datagram, build_signed_report, BuildError, NONCE_LEN};
use igmp_ext::wire::igmp::{decode_code, QueryRepr};
use igmp_ext::{
    AllocationEpoch, Clock, Instant, JoinClaims, MemberCertificate, SliceEntry, SliceSet,
};
use report_schedule::ReportSchedule;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Shared with the MLDv2 join agent.
#[path = "report_schedule.rs"]
pub mod report_schedule;

/// Timers; defaults are RFC 3376 §8's, except `refresh`, which has no RFC counterpart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Robustness Variable (§8.1): how many times a change is reported.
    pub robustness: u8,
    /// Unsolicited Report Interval (§8.11).
    pub unsolicited_report_interval: Duration,
    /// Unprompted refresh period; below the router's claim hold.
    pub refresh: Duration,
    /// At most one query answer per this interval, whatever the queries say: a query is
    /// unauthenticated, so an on-link host could otherwise make the member sign and send a join
    /// per query (an amplifier, and a way to fill the member's replay share at the router).
    pub min_answer_interval: Duration,
    /// The link MTU: the longest datagram the raw socket sends (it cannot fragment).
    pub max_datagram: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            robustness: 2,
            unsolicited_report_interval: Duration::from_secs(1),
            refresh: Duration::from_secs(60),
            min_answer_interval: Duration::from_secs(1),
            max_datagram: 1500,
        }
    }
}

/// What the member is and where it sends from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: SigningKey,
    pub cert: MemberCertificate,
    /// Our address on the link to the router: part of the signed bytes.
    pub sender: Ipv4Addr,
}

/// Schedules and builds one member's joins for one group.
#[derive(Debug)]
pub struct JoinAgent {
    config: AgentConfig,
    identity: Identity,
    group: Ipv4Addr,
    entries: Vec<SliceEntry>,
    /// The allocation's slicing, when the claim is its units ([`JoinAgent::with_slicing`]).
    slicing: Option<Slicing>,
    /// The claim's units one by one, sent as a UNITS bitmap (SPEC.md §3.2); empty when the
    /// claim goes as SLICES (no slicing, a slicing finer than a bitmap takes, or entries that
    /// are not whole units).
    units: Vec<SliceEntry>,
    /// Units this member takes if their owner fails (SPEC.md §5.5).
    standby: Vec<SliceEntry>,
    epoch: AllocationEpoch,
    /// Liveness beacons, when the member sends them (SPEC.md §5.5).
    beacons: Option<SharedBeaconer>,
    trimmed: u64,
    schedule: ReportSchedule,
    /// The shared join for a routed control group (SPEC.md §3.9), when configured.
    control: Option<Box<JoinAgent>>,
}

/// The units of `slicing` that `entries` grant, one by one in unit order (what a UNITS bitmap
/// names), if they are exactly those units and the slicing has at most [`MAX_STANDBY_BITS`]
/// bits; else none, and the claim goes as SLICES.
fn units_of(slicing: Slicing, entries: &[SliceEntry]) -> Vec<SliceEntry> {
    let set = |entries: &[SliceEntry], exclude: bool| -> SliceSet {
        let listed = entries.iter().filter(|e| e.exclude == exclude);
        listed.map(|e| e.slice).collect()
    };
    let (claimed, excluded) = (set(entries, false), set(entries, true));
    if u32::from(slicing.bits()) > MAX_STANDBY_BITS {
        return Vec::new();
    }
    let units: Vec<SliceEntry> = (0..slicing.unit_count())
        .map(|i| slicing.unit(i))
        .filter(|u| claimed.contains(u.value()) && !excluded.contains(u.value()))
        .map(SliceEntry::include)
        .collect();
    let granted = claimed.difference(&excluded);
    let whole = units.iter().map(|e| e.slice).collect::<SliceSet>() == granted;
    if whole {
        units
    } else {
        Vec::new()
    }
}

impl JoinAgent {
    pub fn new(config: AgentConfig, identity: Identity, group: Ipv4Addr) -> Self {
        JoinAgent {
            config,
            identity,
            group,
            entries: Vec::new(),
            slicing: None,
            units: Vec::new(),
            standby: Vec::new(),
            epoch: AllocationEpoch(0),
            beacons: None,
            trimmed: 0,
            schedule: ReportSchedule::default(),
            control: None,
        }
    }

    /// Claims are units of `slicing`: they go as a UNITS bitmap, a bit per unit, so that a
    /// member's scattered units fit the link MTU (13 bytes each as SLICES: 128 scattered units
    /// of the default 8-bit slicing made a 1.7 KB join).
    pub fn with_slicing(mut self, slicing: Slicing) -> Self {
        self.slicing = Some(slicing);
        self
    }

    /// Also holds a shared join for the control group `group` at the router, so that it
    /// carries the group between this member's link and the others' (SPEC.md §3.9): the
    /// certificate's slices at epoch 0, reported at `now` (robustness times), refreshed and
    /// answered to queries like the claim, and left only by [`JoinAgent::leave_all`] (a
    /// withdrawn or drained claim leaves the member in the cluster).
    pub fn with_control_group(mut self, group: Ipv4Addr, now: Instant) -> Self {
        let mut control = JoinAgent::new(self.config.clone(), self.identity.clone(), group);
        let entries = self.identity.cert.body().slices.iter();
        let entries = entries.map(|s| SliceEntry::include(*s)).collect();
        // The repeats spread over the unsolicited report interval without the caller's random.
        let mut spread = 0u64;
        let mut random = || {
            spread = spread.wrapping_add(0x9e37_79b9_7f4a_7c15);
            spread >> 11
        };
        control.set_claim(now, entries, Vec::new(), AllocationEpoch(0), &mut random);
        self.control = Some(Box::new(control));
        self
    }

    /// The control group's shared join, if this agent holds one.
    pub fn control(&self) -> Option<&JoinAgent> {
        self.control.as_deref()
    }

    /// Sends liveness beacons from `beacons` while it holds a claim, and names their chains in
    /// its joins.
    pub fn with_beacons(mut self, beacons: SharedBeaconer) -> Self {
        self.beacons = Some(beacons);
        self
    }

    pub fn group(&self) -> Ipv4Addr {
        self.group
    }

    /// Its beacons, if it sends them: the MLDv2 join names the same chains.
    pub fn beacons(&self) -> Option<&SharedBeaconer> {
        self.beacons.as_ref()
    }

    pub fn entries(&self) -> &[SliceEntry] {
        &self.entries
    }

    pub fn epoch(&self) -> AllocationEpoch {
        self.epoch
    }

    /// Takes a new claim (slices, and the units it stands by for, at an epoch). `random`
    /// returns uniform u64s; the agent draws the retransmission times from it.
    pub fn set_claim(
        &mut self,
        now: Instant,
        entries: Vec<SliceEntry>,
        standby: Vec<SliceEntry>,
        epoch: AllocationEpoch,
        random: &mut dyn FnMut() -> u64,
    ) {
        if entries == self.entries && standby == self.standby && epoch == self.epoch {
            return;
        }
        self.units = self
            .slicing
            .map(|slicing| units_of(slicing, &entries))
            .unwrap_or_default();
        self.entries = entries;
        self.standby = if self.entries.is_empty() {
            Vec::new()
        } else {
            standby
        };
        self.epoch = epoch;
        if let Some(b) = &self.beacons {
            let mut b = crate::beaconer::lock(b);
            if self.entries.is_empty() {
                b.stop();
            } else {
                b.start(now);
            }
        }
        self.report_change(now, random);
    }

    /// Reports the state at once, then robustness − 1 more times within the unsolicited report
    /// interval.
    fn report_change(&mut self, now: Instant, random: &mut dyn FnMut() -> u64) {
        let claiming = !self.entries.is_empty();
        self.schedule.changed(now, claiming, &self.config, random);
    }

    /// Leaves: an empty claim at the current epoch. The control group's shared join stays.
    pub fn leave(&mut self, now: Instant, random: &mut dyn FnMut() -> u64) {
        let epoch = self.epoch;
        self.set_claim(now, Vec::new(), Vec::new(), epoch, random);
    }

    /// Leaves the group and the control group (the daemon stops).
    pub fn leave_all(&mut self, now: Instant, random: &mut dyn FnMut() -> u64) {
        self.leave(now, random);
        if let Some(c) = &mut self.control {
            c.leave(now, random);
        }
    }

    /// A query heard on the link (§5.2): general, or specific to our group, schedules an answer
    /// within its Max Resp Time unless one is due sooner, and never sooner than
    /// `min_answer_interval` after the previous answer (at most one answer pending).
    pub fn handle_query(
        &mut self,
        now: Instant,
        query: &QueryRepr,
        random: &mut dyn FnMut() -> u64,
    ) {
        if let Some(c) = &mut self.control {
            c.handle_query(now, query, random);
        }
        let ours = query.group.is_unspecified() || query.group == self.group;
        if !ours || self.entries.is_empty() {
            return;
        }
        // Max Resp Code counts tenths of a second (§4.1.1).
        let max = Duration::from_millis(u64::from(decode_code(query.max_resp_code)) * 100);
        self.schedule.queried(now, max, &self.config, random);
    }

    /// The next moment `poll_transmit` has something to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule
            .next()
            .into_iter()
            .chain(self.control.as_ref().and_then(|c| c.poll_timeout()))
            .min()
    }

    /// The next datagram due at `now.mono` (IPv4 header included, ready for a raw socket),
    /// signed with `nonce` and stamped `now.wall`.
    pub fn poll_transmit(
        &mut self,
        clock: Clock,
        nonce: [u8; NONCE_LEN],
    ) -> Option<Result<Vec<u8>, BuildError>> {
        self.poll_claim(clock, nonce)
            .or_else(|| self.control.as_mut()?.poll_transmit(clock, nonce))
    }

    /// The claim's next report due, if any (not the control group's).
    fn poll_claim(
        &mut self,
        clock: Clock,
        nonce: [u8; NONCE_LEN],
    ) -> Option<Result<Vec<u8>, BuildError>> {
        let now = clock.mono;
        let record_type = self
            .schedule
            .take_due(now, !self.entries.is_empty(), &self.config)?;
        let as_units = !self.units.is_empty();
        let mut claims = JoinClaims {
            group: self.group,
            record_type,
            entries: if as_units {
                self.units.clone()
            } else {
                self.entries.clone()
            },
            epoch: self.epoch,
            timestamp: clock.wall,
            nonce,
            standby: self.standby.clone(),
            liveness: match &self.beacons {
                Some(b) if !self.entries.is_empty() => crate::beaconer::lock(b).anchors(now),
                _ => Vec::new(),
            },
            as_units,
        };
        // The member's raw socket cannot fragment: a join past the link MTU leaves out its
        // standby units, then its liveness anchor (SPEC.md §5.5), rather than not go at all.
        loop {
            let built = build_signed_report(
                &claims,
                self.identity.sender,
                &self.identity.cert,
                &self.identity.key,
            )
            .map(|igmp| build_datagram(self.identity.sender, &igmp));
            let too_long = built
                .as_ref()
                .is_ok_and(|d| d.len() > self.config.max_datagram);
            if too_long && !claims.standby.is_empty() {
                claims.standby.clear();
            } else if too_long && !claims.liveness.is_empty() {
                // The running chain's anchor first: the next chain's is the one the router
                // needs for the hand-over.
                claims.liveness.remove(0);
            } else {
                if too_long || claims.standby.len() < self.standby.len() {
                    self.trimmed += 1;
                }
                return Some(built);
            }
        }
    }

    /// Joins sent without their standby units or liveness anchor to fit the link MTU.
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{nonce_bytes, Fixture, IFINDEX, NOW as WALL};
    use igmp_ext::wire::record::RecordType;

    /// The agent's monotonic start.
    const NOW: Instant = Instant::from_secs(1);

    /// Both clocks at `t`: the wall clock is the fixture's then.
    fn clock(t: Instant) -> Clock {
        Clock::new(t, WALL.saturating_add(t.saturating_duration_since(NOW)))
    }
    use igmp_ext::wire::igmp::QueryV3Fields;
    use igmp_ext::{Accepted, JoinVerifier, Slice, VerifierConfig};

    fn agent(f: &Fixture) -> JoinAgent {
        let m = &f.members[0];
        let identity = Identity {
            key: m.key.clone(),
            cert: m.cert.clone(),
            sender: m.addr,
        };
        JoinAgent::new(AgentConfig::default(), identity, f.group)
    }

    /// An agent that claimed every address at epoch 1 at [`NOW`] and has sent its reports (2 s
    /// later), with its random source and the next nonce.
    fn settled_agent(f: &Fixture) -> (JoinAgent, impl FnMut() -> u64, u64) {
        let mut a = agent(f);
        let mut rng = counter();
        a.set_claim(
            NOW,
            vec![SliceEntry::include(Slice::ALL)],
            Vec::new(),
            AllocationEpoch(1),
            &mut rng,
        );
        let mut nonce = 0;
        drain(
            &mut a,
            NOW.saturating_add(Duration::from_secs(2)),
            &mut nonce,
        );
        (a, rng, nonce)
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Everything sent until `until`, with the time it was sent.
    fn drain(a: &mut JoinAgent, until: Instant, nonce: &mut u64) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(t) = a.poll_timeout().filter(|&t| t <= until) {
            while let Some(d) = a.poll_transmit(clock(t), nonce_bytes(*nonce)) {
                *nonce += 1;
                out.push((t, d.unwrap()));
            }
        }
        out
    }

    /// A join that would not fit the link MTU goes without its standby units (and counts as
    /// trimmed); one that fits carries them; either verifies at the router.
    #[test]
    fn a_join_past_the_mtu_leaves_its_standby_out() {
        let f = Fixture::new(1);
        let units: Vec<SliceEntry> = (0..256u32)
            .map(|i| SliceEntry::include(Slice::new(i, 0xff)))
            .collect();
        for (mtu, trimmed) in [(1500, 0), (600, 1)] {
            let m = &f.members[0];
            let identity = Identity {
                key: m.key.clone(),
                cert: m.cert.clone(),
                sender: m.addr,
            };
            let config = AgentConfig {
                max_datagram: mtu,
                ..AgentConfig::default()
            };
            let mut a = JoinAgent::new(config, identity, f.group);
            let mut rng = counter();
            let mine: Vec<SliceEntry> = units.iter().copied().step_by(8).collect();
            let standby: Vec<SliceEntry> = units.iter().copied().skip(1).step_by(8).collect();
            a.set_claim(NOW, mine, standby.clone(), AllocationEpoch(1), &mut rng);
            let d = a
                .poll_transmit(clock(NOW), nonce_bytes(1))
                .unwrap()
                .unwrap();
            assert_eq!(a.trimmed(), trimmed, "MTU {mtu}: {} bytes", d.len());
            let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
            match v.handle_datagram(WALL, IFINDEX, &d, &f.key_source()) {
                Ok(Accepted::Join { .. }) => {}
                other => panic!("MTU {mtu}: {other:?}"),
            }
            let (_, claim) = v.ownership().claims(f.group).next().unwrap();
            let expected: igmp_ext::SliceSet = if trimmed == 0 {
                standby.iter().map(|e| e.slice).collect()
            } else {
                igmp_ext::SliceSet::new()
            };
            assert_eq!(claim.standby, expected);
        }
    }

    /// A beaconer for member 0 with a 2 s chain at `interval`, past the half of it, so that the
    /// next chain is drawn too: its joins carry two liveness anchors. Also that instant.
    fn beaconer_with_next_chain(
        f: &Fixture,
        interval: Duration,
        rng: &mut impl FnMut() -> u64,
    ) -> (crate::beaconer::SharedBeaconer, Instant) {
        let mut b = crate::beaconer::Beaconer::new(
            f.group,
            f.members[0].id,
            interval,
            Duration::from_secs(2),
            NOW,
            rng,
        );
        b.start(NOW);
        let half = NOW.saturating_add(Duration::from_millis(1_100));
        let (_, order) = b.poll_beacon(half, rng);
        b.add_next(order.expect("ordered halfway").draw());
        (std::sync::Arc::new(std::sync::Mutex::new(b)), half)
    }

    /// A join that fits the link MTU with one liveness anchor but not two leaves out the
    /// running chain's and keeps the next chain's (the hand-over needs it).
    #[test]
    fn a_join_past_the_mtu_leaves_the_running_chains_anchor_out_first() {
        let f = Fixture::new(1);
        let iv = Duration::from_millis(10);
        let mut rng = counter();
        let (beacons, half) = beaconer_with_next_chain(&f, iv, &mut rng);
        let units: Vec<SliceEntry> = (0..256u32)
            .step_by(4)
            .map(|i| SliceEntry::include(Slice::new(i, 0xff)))
            .collect();
        let send = |mtu: usize| {
            let m = &f.members[0];
            let identity = Identity {
                key: m.key.clone(),
                cert: m.cert.clone(),
                sender: m.addr,
            };
            let config = AgentConfig {
                max_datagram: mtu,
                ..AgentConfig::default()
            };
            let mut a = JoinAgent::new(config, identity, f.group).with_beacons(beacons.clone());
            let mut rng = counter();
            a.set_claim(
                half,
                units.clone(),
                Vec::new(),
                AllocationEpoch(1),
                &mut rng,
            );
            let d = a
                .poll_transmit(clock(half), nonce_bytes(1))
                .unwrap()
                .unwrap();
            let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
            match v.handle_datagram(WALL, IFINDEX, &d, &f.key_source()) {
                Ok(Accepted::Join { .. }) => {}
                other => panic!("MTU {mtu}: {other:?}"),
            }
            let (_, claim) = v.ownership().claims(f.group).next().unwrap();
            (d.len(), claim.liveness.clone())
        };
        let (both, anchors) = send(1500);
        assert_eq!(anchors.len(), 2, "{anchors:?}");
        let (_, kept) = send(both - 1);
        assert_eq!(kept, vec![anchors[1]], "the next chain's anchor is kept");
    }

    #[test]
    fn a_change_is_reported_robustness_times_and_each_report_verifies() {
        let f = Fixture::new(1);
        let mut a = agent(&f);
        let mut rng = counter();
        a.set_claim(
            NOW,
            vec![SliceEntry::include(Slice::new(1, 1))],
            Vec::new(),
            AllocationEpoch(3),
            &mut rng,
        );
        let mut nonce = 0;
        let sent = drain(
            &mut a,
            NOW.saturating_add(Duration::from_secs(2)),
            &mut nonce,
        );
        assert_eq!(sent.len(), 2, "robustness 2");
        assert_eq!(sent[0].0, NOW, "the first report goes at once");
        assert!(sent[1].0 <= NOW.saturating_add(Duration::from_secs(1)));
        let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
        for (t, d) in &sent {
            let r = v.handle_datagram(clock(*t).wall, IFINDEX, d, &f.key_source());
            let Ok(Accepted::Join { join, .. }) = r else {
                panic!("{r:?}")
            };
            assert_eq!(join.record_type(), RecordType::ChangeToIncludeMode);
            assert_eq!(join.epoch(), AllocationEpoch(3));
        }
        // Then only the refresh, a minute later.
        assert_eq!(
            a.poll_timeout(),
            Some(sent[1].0.saturating_add(Duration::from_secs(60)))
        );
    }

    #[test]
    fn queries_are_answered_within_max_resp_time() {
        let f = Fixture::new(1);
        let (mut a, mut rng, mut nonce) = settled_agent(&f);
        let t = NOW.saturating_add(Duration::from_secs(10));
        let general = QueryRepr {
            max_resp_code: 20, // 2 s
            group: Ipv4Addr::UNSPECIFIED,
            v3: Some(QueryV3Fields {
                flags: 0,
                suppress: false,
                qrv: 2,
                qqic: 125,
                sources: vec![],
                additional_data: vec![],
            }),
        };
        a.handle_query(t, &general, &mut rng);
        let due = a.poll_timeout().unwrap();
        assert!(due >= t && due <= t.saturating_add(Duration::from_secs(2)));
        let sent = drain(&mut a, t.saturating_add(Duration::from_secs(2)), &mut nonce);
        assert_eq!(sent.len(), 1);
        let other_group = QueryRepr {
            group: Ipv4Addr::new(232, 9, 9, 9),
            ..general
        };
        a.handle_query(t, &other_group, &mut rng);
        assert!(
            a.poll_timeout().unwrap() > t.saturating_add(Duration::from_secs(30)),
            "not our group: no answer"
        );
    }

    /// Issue 13, item 7: an on-link host sending queries as fast as it likes gets at most one
    /// answer per `min_answer_interval` from a member, so it cannot use members to amplify or to
    /// fill their share of the router's replay cache.
    #[test]
    fn a_query_burst_gets_at_most_one_answer_per_interval() {
        let f = Fixture::new(1);
        let (mut a, mut rng, mut nonce) = settled_agent(&f);
        let base = NOW.saturating_add(Duration::from_secs(3));
        let flood = QueryRepr {
            max_resp_code: 0,
            group: Ipv4Addr::UNSPECIFIED,
            v3: None,
        };
        let mut sent = Vec::new();
        // 1,000 queries over 10 s, answered as soon as they may be.
        for k in 0..1_000u64 {
            let t = base.saturating_add(Duration::from_millis(10 * k));
            sent.extend(drain(&mut a, t, &mut nonce));
            a.handle_query(t, &flood, &mut rng);
        }
        let end = base.saturating_add(Duration::from_secs(10));
        sent.extend(drain(&mut a, end, &mut nonce));
        assert!(!sent.is_empty(), "queries are still answered");
        assert!(
            sent.len() <= 11,
            "{} answers to a 10 s query flood (at most one a second)",
            sent.len()
        );
        for pair in sent.windows(2) {
            assert!(pair[1].0 >= pair[0].0.saturating_add(Duration::from_secs(1)));
        }
    }

    #[test]
    fn leave_is_reported_then_silence() {
        let f = Fixture::new(1);
        let (mut a, mut rng, mut nonce) = settled_agent(&f);
        let t = NOW.saturating_add(Duration::from_secs(5));
        a.leave(t, &mut rng);
        let sent = drain(
            &mut a,
            t.saturating_add(Duration::from_secs(3600)),
            &mut nonce,
        );
        assert_eq!(
            sent.len(),
            2,
            "the leave, robustness times, and no refresh after it"
        );
        assert_eq!(a.poll_timeout(), None);
    }

    /// A routed control group (SPEC.md §3.9): the agent holds a shared join for it beside its
    /// claim, which a router verifies (and owns nothing for); a withdrawn claim keeps it, and
    /// only `leave_all` ends it.
    #[test]
    fn the_control_group_join_is_shared_refreshed_and_left_only_at_the_end() {
        use igmp_ext::{CertificateBody, KeyId};
        const CONTROL: Ipv4Addr = Ipv4Addr::new(239, 77, 0, 1);
        let f = Fixture::new(1);
        let m = &f.members[0];
        let body = CertificateBody {
            groups: vec![f.group, CONTROL],
            ..m.cert.body().clone()
        };
        let cert = body.issue(&f.group_key).expect("the group key");
        assert_eq!(body.issuer, KeyId::of(&f.group_key.verifying_key()));
        let identity = Identity {
            key: m.key.clone(),
            cert,
            sender: m.addr,
        };
        let mut a = JoinAgent::new(AgentConfig::default(), identity, f.group)
            .with_control_group(CONTROL, NOW);
        let mut config = VerifierConfig::default();
        config.protected.push(Slice::prefix(CONTROL, 32));
        let mut v = JoinVerifier::new(config, f.links());
        v.set_shared(vec![CONTROL]);
        let mut keys = f.key_source();
        keys.insert(CONTROL, std::sync::Arc::new(f.group_keys()));
        let control_joins = |v: &mut JoinVerifier, sent: Vec<(Instant, Vec<u8>)>| {
            let mut out = Vec::new();
            for (t, d) in sent {
                match v.handle_datagram(clock(t), IFINDEX, &d, &keys) {
                    Ok(Accepted::Join { join, .. }) if join.group() == CONTROL => {
                        out.push(!join.slices().is_empty())
                    }
                    Ok(Accepted::Join { .. }) => {}
                    other => panic!("{other:?}"),
                }
            }
            out
        };
        let mut rng = counter();
        let mut nonce = 0;
        let t = NOW.saturating_add(Duration::from_secs(2));
        let sent = drain(&mut a, t, &mut nonce);
        assert_eq!(
            control_joins(&mut v, sent),
            vec![true, true],
            "robustness times"
        );
        assert_eq!(
            v.ownership().claims(CONTROL).count(),
            0,
            "shared: nothing owned"
        );
        // A withdrawn claim (health, drain) leaves the control group joined: it is refreshed.
        a.leave(t, &mut rng);
        let t = t.saturating_add(Duration::from_secs(61));
        let sent = drain(&mut a, t, &mut nonce);
        assert_eq!(control_joins(&mut v, sent), vec![true], "the refresh");
        a.handle_query(
            t,
            &QueryRepr {
                max_resp_code: 10,
                group: Ipv4Addr::UNSPECIFIED,
                v3: None,
            },
            &mut rng,
        );
        let t = t.saturating_add(Duration::from_secs(2));
        let sent = drain(&mut a, t, &mut nonce);
        assert_eq!(control_joins(&mut v, sent), vec![true], "a query answered");
        a.leave_all(t, &mut rng);
        let sent = drain(
            &mut a,
            t.saturating_add(Duration::from_secs(3600)),
            &mut nonce,
        );
        assert_eq!(control_joins(&mut v, sent), vec![false, false], "the leave");
        assert_eq!(a.poll_timeout(), None);
    }

    /// At the default 8-bit slicing a member whose units a crash scattered (the 128 of even
    /// bit parity: none merge) and that stands by for the other 128, with both liveness
    /// anchors, sends its join whole as UNITS, a bit per unit, and the router grants every
    /// unit; as SLICES (13 bytes each) it was over a 1,500-byte link.
    #[test]
    fn scattered_units_at_the_default_slicing_go_as_a_bitmap_and_fit_the_link() {
        let f = Fixture::new(1);
        let slicing = Slicing::LowOrder { bits: 8 };
        let mut rng = counter();
        let (beacons, half) = beaconer_with_next_chain(&f, Duration::from_millis(10), &mut rng);
        let parity = |odd: u32| -> Vec<SliceEntry> {
            (0..256usize)
                .filter(|i| i.count_ones() % 2 == odd)
                .map(|i| SliceEntry::include(slicing.unit(i)))
                .collect()
        };
        let m = &f.members[0];
        let identity = Identity {
            key: m.key.clone(),
            cert: m.cert.clone(),
            sender: m.addr,
        };
        let config = AgentConfig {
            max_datagram: 1500,
            ..AgentConfig::default()
        };
        let mut a = JoinAgent::new(config, identity, f.group)
            .with_beacons(beacons.clone())
            .with_slicing(slicing);
        a.set_claim(half, parity(0), parity(1), AllocationEpoch(1), &mut rng);
        let d = a
            .poll_transmit(clock(half), nonce_bytes(1))
            .unwrap()
            .unwrap();
        assert!(d.len() <= 1500, "{} bytes", d.len());
        assert_eq!(a.trimmed(), 0, "nothing left out");
        let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
        let r = v.handle_datagram(WALL, IFINDEX, &d, &f.key_source());
        assert!(matches!(r, Ok(Accepted::Join { .. })), "{r:?}");
        let (_, claim) = v.ownership().claims(f.group).next().unwrap();
        let set =
            |e: Vec<SliceEntry>| -> igmp_ext::SliceSet { e.iter().map(|e| e.slice).collect() };
        assert_eq!(claim.slices, set(parity(0)));
        assert_eq!(claim.slices.len(), 128, "nothing merged");
        assert_eq!(claim.standby, set(parity(1)));
        assert_eq!(claim.liveness.len(), 2);
    }

    /// Only whole units of a slicing of at most 11 bits go as UNITS: a claim that cuts a unit,
    /// or a finer slicing, goes as SLICES.
    #[test]
    fn claims_that_are_not_whole_units_go_as_slices() {
        let low8 = Slicing::LowOrder { bits: 8 };
        let whole = vec![SliceEntry::include(Slice::new(1, 0x3))];
        assert_eq!(
            units_of(low8, &whole).len(),
            64,
            "a 2-bit slice is 64 units"
        );
        assert!(units_of(low8, &[SliceEntry::include(Slice::new(1, 0x1ff))]).is_empty());
        let cut = vec![
            SliceEntry::include(Slice::new(1, 0xff)),
            SliceEntry::exclude(Slice::new(0x101, 0xffff)),
        ];
        assert!(units_of(low8, &cut).is_empty());
        let fine = Slicing::LowOrder { bits: 12 };
        assert!(units_of(fine, &[SliceEntry::include(fine.unit(3))]).is_empty());
    }
}
