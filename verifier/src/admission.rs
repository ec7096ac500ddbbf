//! Who gets the verifier's signature checks, sans-IO (SPEC.md §5.4, issue 13 item 5). Every
//! datagram gets the cheap checks; only candidates (signed joins that passed them) wait here for
//! the expensive part, and a budget of signature checks per second is handed out by priority:
//! a refresh from where the member's claim already is first, then traffic from sources and
//! interfaces that have not been failing, then the rest. Failures are charged to the source and
//! interface they came from; verified joins to their member, after the signature. Nothing here
//! refuses a datagram before it is parsed, so spoofing a member's address costs that member
//! nothing but priority, and within a class the backlog is sampled at random across members.
//!
//! IGMPv3 and MLDv2 candidates share one backlog and one budget, by the same classes: a flood
//! in one family buys it no share of the other's (SPEC.md §5.4, §5.6). Sources are keyed by
//! address, members by id (a dual-stack member's joins of both families charge one budget).

use igmp_ext::join::MAX_JOIN_DATAGRAM;
use igmp_ext::mld_verifier::MldCandidate;
use igmp_ext::verify::Candidate;
use igmp_ext::{MemberId, Timestamp};
use std::collections::HashMap;
use std::net::IpAddr;

/// Sources remembered at most; beyond it, those whose budget is full again are forgotten.
const MAX_SOURCES: usize = 16_384;
/// Signature checks a candidate whose certificate was never checked costs.
const UNCHECKED_CERTIFICATE_COST: f64 = 2.0;

/// The family a candidate came in: its counters are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Igmp = 0,
    Mld = 1,
}

/// A signed join past its cheap checks, waiting for the expensive part: an IGMPv3 one
/// ([`igmp_ext::JoinVerifier::verify`]) or an MLDv2 one
/// ([`igmp_ext::mld_verifier::MldJoinVerifier::verify`]). Boxed: a round regroups and a full
/// backlog sheds by moving them.
#[derive(Debug)]
pub enum Pending {
    Igmp(Box<Candidate>),
    Mld(Box<MldCandidate>),
}

macro_rules! either {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            Pending::Igmp($c) => $e,
            Pending::Mld($c) => $e,
        }
    };
}

impl Pending {
    pub fn family(&self) -> Family {
        match self {
            Pending::Igmp(_) => Family::Igmp,
            Pending::Mld(_) => Family::Mld,
        }
    }

    /// The member its certificate names (unproven until its certificate is checked).
    pub fn claimed_member(&self) -> MemberId {
        either!(self, c => c.claimed_member())
    }

    pub fn group(&self) -> IpAddr {
        either!(self, c => c.group().into())
    }

    /// Its source address (unproven until its signature is checked).
    pub fn sender(&self) -> IpAddr {
        either!(self, c => c.sender().into())
    }

    pub fn ifindex(&self) -> u32 {
        either!(self, c => c.ifindex())
    }

    fn certificate_known(&self) -> bool {
        either!(self, c => c.certificate_known())
    }

    fn signed_len(&self) -> usize {
        either!(self, c => c.signed_len())
    }

    /// Backlog places it takes: one per 16 KiB signed (an MLDv2 join may be up to 56 KiB, an
    /// IGMPv3 one 16 KiB), so that the backlog's memory stays bounded whatever the mix.
    fn weight(&self) -> usize {
        self.signed_len().div_ceil(MAX_JOIN_DATAGRAM).max(1)
    }
}

/// The policy's settings (`[rate_limit]` in the config, SPEC.md §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Refused datagrams per second from one source before its candidates lose priority.
    pub per_source_failures: u32,
    /// Refused datagrams per second on one interface before its candidates lose priority.
    pub per_interface_failures: u32,
    /// Verified joins per second from one member before its candidates lose priority.
    pub per_member: u32,
    /// Signature checks per second the verifier spends (burst: a tenth of a second's worth).
    pub verify_per_second: u32,
    /// Backlog places (a candidate takes one per 16 KiB it signs) at most; beyond it candidates
    /// of the lowest class are shed, preferring a member that has more waiting there.
    pub backlog: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            per_source_failures: 50,
            per_interface_failures: 2_000,
            per_member: 10,
            verify_per_second: 5_000,
            backlog: 1_024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    fn full(size: f64, now: Timestamp) -> Self {
        Bucket {
            tokens: size,
            at: now,
        }
    }

    /// Refills at `rate` per second up to `size`.
    fn refill(&mut self, rate: f64, size: f64, now: Timestamp) {
        let elapsed = now.as_millis().saturating_sub(self.at.as_millis()) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(size);
        self.at = now.max(self.at);
    }

    /// Takes `n` tokens; the balance may go below zero (a debt paid back by refills).
    fn charge(&mut self, rate: f64, now: Timestamp, n: f64) {
        self.refill(rate, rate, now);
        self.tokens -= n;
    }

    fn overdrawn(&self, rate: f64, now: Timestamp) -> bool {
        let mut b = *self;
        b.refill(rate, rate, now);
        b.tokens < 1.0
    }
}

/// Which budget a datagram or candidate ran out of (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Its interface has been refusing more than its failure budget.
    Interface,
    /// Its source has been refusing more than its failure budget.
    Source,
    /// Shed from a full backlog, or never reached while verification capacity lasted.
    Capacity,
}

impl Limited {
    pub const ALL: [Limited; 3] = [Limited::Interface, Limited::Source, Limited::Capacity];

    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Interface => "interface",
            Limited::Source => "source",
            Limited::Capacity => "capacity",
        }
    }
}

/// A candidate's priority, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A refresh from the sender and interface of the member's current claim.
    Expected = 0,
    /// From a source and interface within their failure budgets.
    Clean = 1,
    /// From a failing source or interface, or a member over its budget.
    Suspect = 2,
}

/// Counters for status and metrics, one set per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Candidates that got verification work.
    pub verified: u64,
    /// Candidates shed from a full backlog.
    pub shed: u64,
    /// Candidates queued per class when they arrived.
    pub queued: [u64; 3],
    /// Datagrams charged to an overdrawn source or interface failure budget.
    pub overdrawn: [u64; 2],
}

/// Candidates from where a member's claim on a group is that may wait as "expected" at once: a
/// member sends one refresh per query it answers, so more than this waiting means its address
/// is being spoofed, and the rest wait as suspect (the class shed first) instead of pushing
/// other members' joins out.
const EXPECTED_PER_CLAIM: usize = 2;

/// One member's candidates in one class, each with its arrival number.
type Waiting = Vec<(u64, Pending)>;

/// Candidates looked at to choose one to shed from a full backlog (see [`Admission::push`]).
const SHED_PICKS: usize = 4;

/// The policy's state: budgets and the backlog, one queue per class.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    sources: HashMap<IpAddr, Bucket>,
    interfaces: HashMap<u32, Bucket>,
    members: HashMap<MemberId, Bucket>,
    capacity: Bucket,
    /// Each candidate with its arrival number: a round is applied in arrival order.
    backlog: [Waiting; 3],
    /// Backlog places taken ([`Pending::weight`]).
    weight: usize,
    /// Per class, how many candidates each claimed member has waiting (for shedding).
    waiting_per_member: [HashMap<MemberId, usize>; 3],
    arrivals: u64,
    random: u64,
    stats: [AdmissionStats; 2],
}

impl Admission {
    pub fn new(config: AdmissionConfig, now: Timestamp) -> Self {
        Admission {
            capacity: Bucket::full(burst(config.verify_per_second), now),
            config,
            sources: HashMap::new(),
            interfaces: HashMap::new(),
            members: HashMap::new(),
            backlog: Default::default(),
            waiting_per_member: Default::default(),
            weight: 0,
            arrivals: 0,
            random: 0x9e37_79b9_7f4a_7c15,
            stats: Default::default(),
        }
    }

    pub fn stats(&self, family: Family) -> &AdmissionStats {
        &self.stats[family as usize]
    }

    /// Candidates waiting.
    pub fn waiting(&self) -> usize {
        self.backlog.iter().map(Vec::len).sum()
    }

    /// Candidates of `family` waiting.
    pub fn waiting_in(&self, family: Family) -> usize {
        self.backlog
            .iter()
            .flatten()
            .filter(|(_, c)| c.family() == family)
            .count()
    }

    /// A datagram of `family` from `source` on `ifindex` was refused (before or after its
    /// signature). Returns which budget is now overdrawn, if any, for the caller's counters.
    pub fn charge_failure(
        &mut self,
        now: Timestamp,
        family: Family,
        ifindex: u32,
        source: Option<IpAddr>,
    ) -> Option<Limited> {
        let rate = f64::from(self.config.per_interface_failures);
        let i = self
            .interfaces
            .entry(ifindex)
            .or_insert_with(|| Bucket::full(rate, now));
        i.charge(rate, now, 1.0);
        let mut limited = (i.tokens < 0.0).then_some(Limited::Interface);
        if let Some(source) = source {
            let rate = f64::from(self.config.per_source_failures);
            if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
                // Forget sources whose budget is full again: they lose nothing by it.
                self.sources.retain(|_, b| {
                    b.refill(rate, rate, now);
                    b.tokens < rate
                });
            }
            if self.sources.len() < MAX_SOURCES || self.sources.contains_key(&source) {
                let s = self
                    .sources
                    .entry(source)
                    .or_insert_with(|| Bucket::full(rate, now));
                s.charge(rate, now, 1.0);
                if s.tokens < 0.0 {
                    limited = Some(Limited::Source);
                }
            }
        }
        let stats = &mut self.stats[family as usize];
        match limited {
            Some(Limited::Interface) => stats.overdrawn[0] += 1,
            Some(Limited::Source) => stats.overdrawn[1] += 1,
            _ => {}
        }
        limited
    }

    /// A join from `member` verified: charged to the member, after the signature.
    pub fn charge_member(&mut self, now: Timestamp, member: MemberId) {
        let rate = f64::from(self.config.per_member);
        self.members
            .entry(member)
            .or_insert_with(|| Bucket::full(rate, now))
            .charge(rate, now, 1.0);
    }

    /// The candidate's priority. `expected` says whether the member's current claim on the
    /// group is at this candidate's sender and interface; only [`EXPECTED_PER_CLAIM`] such
    /// candidates per member and group wait as expected at once.
    pub fn classify(&self, now: Timestamp, c: &Pending, expected: bool) -> Class {
        let over =
            |b: Option<&Bucket>, rate: u32| b.is_some_and(|b| b.overdrawn(f64::from(rate), now));
        if over(
            self.members.get(&c.claimed_member()),
            self.config.per_member,
        ) {
            return Class::Suspect;
        }
        if expected {
            let waiting = self.backlog[Class::Expected as usize]
                .iter()
                .filter(|(_, w)| w.claimed_member() == c.claimed_member() && w.group() == c.group())
                .count();
            return if waiting < EXPECTED_PER_CLAIM {
                Class::Expected
            } else {
                Class::Suspect
            };
        }
        let source = over(
            self.sources.get(&c.sender()),
            self.config.per_source_failures,
        );
        let interface = over(
            self.interfaces.get(&c.ifindex()),
            self.config.per_interface_failures,
        );
        if source || interface {
            Class::Suspect
        } else {
            Class::Clean
        }
    }

    /// Queues a candidate. While the backlog is over its places, one candidate of the lowest
    /// class present is shed (possibly this one): of `SHED_PICKS` picked at random, the one
    /// whose claimed member has the most candidates waiting in that class. A flood claiming one
    /// member so sheds its own copies, and another member's lone join in the same class almost
    /// never goes (every pick would have to be it: about 1 in 10^12 per shed with a full
    /// backlog of 1,024); between candidates of one member every arrival has the same chance
    /// to stay, however many the flood sends.
    /// Returns the candidates shed, with their class (more than one only when a large MLDv2
    /// join took the places of several).
    pub fn push(&mut self, class: Class, c: Pending) -> Vec<(Class, Pending)> {
        self.stats[c.family() as usize].queued[class as usize] += 1;
        self.arrivals += 1;
        *self.waiting_per_member[class as usize]
            .entry(c.claimed_member())
            .or_default() += 1;
        self.weight += c.weight();
        self.backlog[class as usize].push((self.arrivals, c));
        let mut shed = Vec::new();
        while self.weight > self.config.backlog.max(1) {
            shed.push(self.shed_one());
        }
        shed
    }

    /// Sheds one candidate of the lowest class present (see [`Admission::push`]).
    fn shed_one(&mut self) -> (Class, Pending) {
        let class = self
            .backlog
            .iter()
            .rposition(|q| !q.is_empty())
            .expect("the backlog is over its size, so not empty");
        let len = self.backlog[class].len() as u64;
        let picks: [usize; SHED_PICKS] =
            core::array::from_fn(|_| (next(&mut self.random) % len) as usize);
        let counts = &self.waiting_per_member[class];
        let waiting = |i: usize| {
            let m = self.backlog[class][i].1.claimed_member();
            counts.get(&m).copied().unwrap_or(0)
        };
        let at = picks
            .into_iter()
            .max_by_key(|&i| waiting(i))
            .expect("SHED_PICKS > 0");
        let (_, gone) = self.backlog[class].swap_remove(at);
        self.forget(class, gone.claimed_member());
        self.weight -= gone.weight();
        self.stats[gone.family() as usize].shed += 1;
        let class = [Class::Expected, Class::Clean, Class::Suspect][class];
        (class, gone)
    }

    /// One candidate of `member` in `class` left the backlog.
    fn forget(&mut self, class: usize, member: MemberId) {
        let counts = &mut self.waiting_per_member[class];
        if let Some(n) = counts.get_mut(&member) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&member);
            }
        }
    }

    /// The candidates to verify now, as many as the capacity allows: first one per claimed
    /// member and class, best class first, so that no member's copies, in whatever class, keep
    /// another member's join waiting; then the rest, best class first, one per member in turn.
    /// Each is picked at random among that member's, so that a flood claiming one member costs
    /// the others nothing and a refreshed join has its share of chances. The rest wait for the
    /// next round. Those taken are in arrival order, so that a member's joins apply in the
    /// order it sent them.
    pub fn take_round(&mut self, now: Timestamp) -> Vec<Pending> {
        let rate = f64::from(self.config.verify_per_second);
        self.capacity
            .refill(rate, burst(self.config.verify_per_second), now);
        let mut out = Vec::new();
        let mut classes: [Vec<(MemberId, Waiting)>; 3] = Default::default();
        for (class, grouped) in classes.iter_mut().enumerate() {
            let queue = std::mem::take(&mut self.backlog[class]);
            let mut index: HashMap<MemberId, usize> = HashMap::new();
            for c in queue {
                let m = c.1.claimed_member();
                let at = *index.entry(m).or_insert_with(|| {
                    grouped.push((m, Vec::new()));
                    grouped.len() - 1
                });
                grouped[at].1.push(c);
            }
            // Members in a random rotation, so that no member id is always served first.
            if !grouped.is_empty() {
                let start = (next(&mut self.random) % grouped.len() as u64) as usize;
                grouped.rotate_left(start);
            }
        }
        'first: for grouped in classes.iter_mut() {
            for (_, list) in grouped.iter_mut() {
                if !self.take_one(list, &mut out) {
                    break 'first;
                }
            }
        }
        for grouped in classes.iter_mut() {
            'rounds: loop {
                let mut any = false;
                for (_, list) in grouped.iter_mut() {
                    if list.is_empty() {
                        continue;
                    }
                    if !self.take_one(list, &mut out) {
                        break 'rounds;
                    }
                    any = true;
                }
                if !any {
                    break;
                }
            }
        }
        for (class, grouped) in classes.into_iter().enumerate() {
            self.waiting_per_member[class] = grouped
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(m, l)| (*m, l.len()))
                .collect();
            self.backlog[class] = grouped.into_iter().flat_map(|(_, l)| l).collect();
        }
        for (_, c) in &out {
            self.weight -= c.weight();
            self.stats[c.family() as usize].verified += 1;
        }
        out.sort_unstable_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, c)| c).collect()
    }
}

impl Admission {
    /// Moves one of `list`, at random, to `out` if the capacity pays for it; false when it
    /// does not (the round is over). An empty list takes nothing and is no reason to stop.
    fn take_one(&mut self, list: &mut Waiting, out: &mut Waiting) -> bool {
        if list.is_empty() {
            return true;
        }
        let at = (next(&mut self.random) % list.len() as u64) as usize;
        let cost = cost(&list[at].1);
        if self.capacity.tokens < cost {
            return false;
        }
        self.capacity.tokens -= cost;
        out.push(list.swap_remove(at));
        true
    }
}

/// What verifying a candidate costs, in signature checks of a small join: one, a second for a
/// certificate never checked, and up to one more for the bytes to hash (a join at the caps
/// hashes 16 KiB: measured as 1.7 checks).
fn cost(c: &Pending) -> f64 {
    let certificate = if c.certificate_known() {
        0.0
    } else {
        UNCHECKED_CERTIFICATE_COST - 1.0
    };
    1.0 + certificate + c.signed_len() as f64 / MAX_JOIN_DATAGRAM as f64
}

/// A tenth of a second's worth of checks, at least one.
fn burst(per_second: u32) -> f64 {
    (f64::from(per_second) / 10.0).max(1.0)
}

/// xorshift64: the backlog's sampling needs spread, not secrecy (an attacker gains nothing by
/// predicting which of its own forgeries are checked).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{Fixture, IFINDEX, NOW};
    use igmp_ext::verify::Prechecked;
    use igmp_ext::{JoinVerifier, Slice, VerifierConfig};

    fn candidates(f: &Fixture, n: usize) -> Vec<Pending> {
        let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
        // Certificates checked once: each candidate then costs one check.
        for i in 0..f.members.len() {
            let d = f.join(i, &[Slice::new(i as u32, 1)], 1, 1_000 + i as u64);
            v.handle_datagram(NOW, IFINDEX, &d, &f.key_source())
                .expect("valid");
        }
        (0..n)
            .map(|k| {
                let d = f.join(k % f.members.len(), &[Slice::ALL], 1, k as u64);
                match v.precheck(NOW, IFINDEX, &d, &f.key_source()) {
                    Ok(Prechecked::Candidate(c)) => Pending::Igmp(c),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn failures_and_verified_joins_lower_only_their_own_priority() {
        let f = Fixture::new(2);
        let mut c = candidates(&f, 2).into_iter();
        let (a, b) = (c.next().unwrap(), c.next().unwrap());
        let mut adm = Admission::new(AdmissionConfig::default(), NOW);
        assert_eq!(adm.classify(NOW, &a, false), Class::Clean);
        for _ in 0..50 {
            let failed = adm.charge_failure(NOW, Family::Igmp, IFINDEX, Some(a.sender()));
            assert_eq!(failed, None);
        }
        assert_eq!(
            adm.charge_failure(NOW, Family::Igmp, IFINDEX, Some(a.sender())),
            Some(Limited::Source)
        );
        assert_eq!(adm.classify(NOW, &a, false), Class::Suspect);
        assert_eq!(adm.classify(NOW, &a, true), Class::Expected);
        assert_eq!(adm.classify(NOW, &b, false), Class::Clean);
        // A second later the source's budget has refilled.
        let later = NOW.saturating_add(core::time::Duration::from_secs(1));
        assert_eq!(adm.classify(later, &a, false), Class::Clean);
        // Verified joins over the member budget: suspect even from where its claim is.
        for _ in 0..11 {
            adm.charge_member(later, b.claimed_member());
        }
        assert_eq!(adm.classify(later, &b, true), Class::Suspect);
        assert_eq!(adm.classify(later, &a, true), Class::Expected);
    }

    /// Issue 13, item 5 (found by `make bench B=attack`): copies of one member's join flooding
    /// a full backlog in the class of another member's refresh shed that refresh too, at random
    /// (a third of a probe member's joins at 79,000 pps). Shedding now takes the flooded
    /// member's copies.
    #[test]
    fn a_flood_claiming_one_member_sheds_its_own_copies_not_anothers_join() {
        let f = Fixture::new(2);
        let config = AdmissionConfig {
            backlog: 64,
            ..AdmissionConfig::default()
        };
        let mut adm = Admission::new(config, NOW);
        // Candidates alternate between the members: the second is member 2's.
        let (mut lone, flood): (Vec<_>, Vec<_>) = candidates(&f, 1_000)
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % 2 == 0 || *k == 1)
            .partition(|(k, _)| *k == 1);
        let (_, lone) = lone.pop().expect("one");
        assert_eq!(lone.claimed_member(), f.members[1].id);
        adm.push(Class::Expected, lone);
        for (_, c) in flood {
            adm.push(Class::Expected, c);
        }
        assert_eq!(adm.waiting(), 64);
        assert_eq!(adm.stats(Family::Igmp).shed, 437);
        assert_eq!(adm.stats(Family::Mld).shed, 0);
        let waiting_for = |m: MemberId| {
            adm.backlog[Class::Expected as usize]
                .iter()
                .filter(|(_, c)| c.claimed_member() == m)
                .count()
        };
        assert_eq!(waiting_for(f.members[1].id), 1, "the lone join stays");
        assert_eq!(
            adm.waiting_per_member[Class::Expected as usize].get(&f.members[0].id),
            Some(&63)
        );
    }

    /// Issue 13 (`make bench B=attack` at the generator's top rate): copies from a member's
    /// own address all waited as "expected", so a round spent its whole budget on them and a
    /// full backlog shed another member's join of a lower class. Only two now wait as expected
    /// per member and group, and a round takes one of every member's before any second.
    #[test]
    fn copies_from_a_claims_place_neither_fill_the_best_class_nor_starve_another_member() {
        let f = Fixture::new(2);
        let config = AdmissionConfig {
            backlog: 16,
            verify_per_second: 30, // a round's burst: three checks' worth
            ..AdmissionConfig::default()
        };
        let mut adm = Admission::new(config, NOW);
        let (flood, other): (Vec<_>, Vec<_>) = candidates(&f, 200)
            .into_iter()
            .partition(|c| c.claimed_member() == f.members[0].id);
        let mut classes = Vec::new();
        for c in flood {
            let class = adm.classify(NOW, &c, true);
            classes.push(class);
            adm.push(class, c);
        }
        assert_eq!(classes[..2], [Class::Expected; 2]);
        assert!(classes[2..].iter().all(|&c| c == Class::Suspect));
        let lone = other.into_iter().next().expect("member 2's join");
        adm.push(adm.classify(NOW, &lone, false), lone);
        assert_eq!(adm.waiting(), 16, "shed from the flood's suspects");
        let round = adm.take_round(NOW);
        assert_eq!(round.len(), 2, "the budget pays for two");
        assert!(
            round.iter().any(|c| c.claimed_member() == f.members[1].id),
            "member 2's join is in the first round"
        );
    }

    #[test]
    fn a_full_backlog_sheds_the_lowest_class_and_rounds_serve_the_best_first() {
        let f = Fixture::new(2);
        let config = AdmissionConfig {
            backlog: 4,
            verify_per_second: 30, // three checks per round: two small joins
            ..AdmissionConfig::default()
        };
        let mut adm = Admission::new(config, NOW);
        let mut c = candidates(&f, 12).into_iter();
        adm.push(Class::Expected, c.next().unwrap());
        for c in c.by_ref().take(10) {
            adm.push(Class::Suspect, c);
        }
        adm.push(Class::Clean, c.next().unwrap());
        assert_eq!(adm.waiting(), 4);
        assert_eq!(adm.stats(Family::Igmp).shed, 8);
        assert_eq!(adm.backlog.each_ref().map(|q| q.len()), [1, 1, 2]);
        let round = adm.take_round(NOW);
        assert_eq!(round.len(), 2);
        assert_eq!(
            adm.backlog.each_ref().map(|q| q.len()),
            [0, 0, 2],
            "best classes first"
        );
        assert!(adm.take_round(NOW).is_empty(), "the budget is spent");
        let later = NOW.saturating_add(core::time::Duration::from_millis(100));
        assert_eq!(adm.take_round(later).len(), 2);
        assert_eq!(adm.waiting(), 0);
    }

    /// An MLDv2 join may sign up to 56 KiB, an IGMPv3 one 16 KiB: a large MLDv2 candidate
    /// takes a backlog place per 16 KiB, so that the backlog's memory bound (SPEC.md §5.4)
    /// holds whatever the mix, and shedding frees places until it fits.
    #[test]
    fn a_large_mld_join_takes_a_backlog_place_per_16_kib() {
        use igmp_ext::fixtures::GROUP6;
        use igmp_ext::mld_verifier::{MldJoinVerifier, MldPrechecked};
        use igmp_ext::verify6::MldVerifierConfig;
        use igmp_ext::{Slice6, SliceSet6};
        let f = Fixture::dual_stack(2, SliceSet6::full());
        let mut v = MldJoinVerifier::new(
            MldVerifierConfig::default(),
            &VerifierConfig::default(),
            f.links6(),
        );
        let slices: Vec<Slice6> = (0..1_000u128)
            .map(|i| Slice6::new(i << 64, u128::MAX << 64))
            .collect();
        let d = f.datagram6(0, &f.claims6(&slices, 1, NOW, 1));
        let Ok(MldPrechecked::Candidate(large)) = v.precheck(NOW, IFINDEX, &d, &f.key_source6())
        else {
            panic!("a candidate")
        };
        let large = Pending::Mld(large);
        assert_eq!(large.group(), std::net::IpAddr::from(GROUP6));
        assert!(
            large.signed_len() > 3 * MAX_JOIN_DATAGRAM,
            "{}",
            large.signed_len()
        );
        assert_eq!(large.weight(), 4);
        let config = AdmissionConfig {
            backlog: 4,
            ..AdmissionConfig::default()
        };
        let mut adm = Admission::new(config, NOW);
        for c in candidates(&f, 3) {
            assert_eq!(c.weight(), 1);
            assert!(adm.push(Class::Clean, c).is_empty());
        }
        let shed = adm.push(Class::Clean, large);
        assert!(!shed.is_empty());
        assert!(adm.weight <= 4, "{} places taken", adm.weight);
        // Either small ones made room for the large one, or it went (and shedding stopped).
        let still = adm.waiting_in(Family::Mld);
        let mld_shed = shed
            .iter()
            .filter(|(_, c)| c.family() == Family::Mld)
            .count();
        assert_eq!(still + mld_shed, 1);
        let igmp_shed = shed.len() - mld_shed;
        assert_eq!(adm.waiting_in(Family::Igmp), 3 - igmp_shed);
        if still == 1 {
            assert_eq!(igmp_shed, 3, "it takes all four places");
        } else {
            assert_eq!(shed.last().map(|(_, c)| c.family()), Some(Family::Mld));
        }
        let stats = (adm.stats(Family::Igmp).shed, adm.stats(Family::Mld).shed);
        assert_eq!(stats, (igmp_shed as u64, mld_shed as u64));
    }
}
