//! Admission to verification for both families (SPEC.md §5.4, §5.6): IGMPv3 and MLDv2
//! candidates are classed by the same rules, wait in one backlog, and share one budget of
//! signature checks; each round's candidates go to their family's verifier (the IGMPv3 ones
//! in one batch) and the outcomes are charged as §5.4 says.

use super::*;
use igmp_ext::ownership::{FamilyAddr, OwnershipTableOf};

impl Router {
    /// Queues a candidate of either family in its class. Candidates shed unverified from where
    /// their member's claim is hold that claim (§5.4 step 5).
    pub(super) fn admit(&mut self, clock: Clock, c: Pending) {
        let (member, ifindex) = (c.claimed_member(), c.ifindex());
        let expected = match &c {
            Pending::Igmp(c) => at_claim(
                self.verifier.ownership(),
                c.group(),
                member,
                c.sender(),
                ifindex,
            ),
            Pending::Mld(c) => {
                at_claim(self.mld_ownership(), c.group(), member, c.sender(), ifindex)
            }
        };
        let class = self.admission.classify(timers(clock), &c, expected);
        for (_, shed) in self.admission.push(class, c) {
            self.hold_unverified_refresh(clock, &shed);
        }
    }

    /// A candidate was shed unverified: if it came from where its member's claim is, it may
    /// have been the member's refresh, so the claim is kept as if it were (SPEC.md §5.4).
    /// Copies the budget does check and refuse keep nothing, so a flood must outrun the
    /// verifier to hold a claim, and a later epoch from the control group still takes the
    /// slices at once.
    fn hold_unverified_refresh(&mut self, clock: Clock, shed: &Pending) {
        let (member, ifindex, t) = (shed.claimed_member(), shed.ifindex(), clock.mono);
        let held = match shed {
            Pending::Igmp(c) => {
                let v = &mut self.verifier;
                v.hold_unverified_refresh(t, c.group(), member, c.sender(), ifindex)
            }
            Pending::Mld(c) => {
                let v = &mut self.mld.verifier;
                v.hold_unverified_refresh(t, c.group(), member, c.sender(), ifindex)
            }
        };
        if held {
            self.stats.claims_held_unverified += 1;
        }
    }

    /// Verifies what the budget allows of the backlog: the IGMPv3 candidates in one batch,
    /// then the MLDv2 ones.
    pub(super) fn verify_round(&mut self, clock: Clock) {
        let round = self.admission.take_round(timers(clock));
        let (mut igmp, mut mld) = (Vec::new(), Vec::new());
        for c in round {
            match c {
                Pending::Igmp(c) => igmp.push(*c),
                Pending::Mld(c) => mld.push(*c),
            }
        }
        if !igmp.is_empty() {
            self.verify_igmp(clock, igmp);
        }
        if !mld.is_empty() {
            self.verify_mld(clock, mld);
        }
    }

    fn verify_igmp(&mut self, clock: Clock, round: Vec<Candidate>) {
        let now = timers(clock);
        let origins: Vec<(u32, MemberId)> = round
            .iter()
            .map(|c| (c.ifindex(), c.claimed_member()))
            .collect();
        let results = self.verifier.verify(clock, round);
        for ((ifindex, member), result) in origins.into_iter().zip(results) {
            match result {
                Ok(Accepted::Join { join, .. }) if self.control.routes(join.group()) => {
                    self.control_join(clock, &join)
                }
                Ok(Accepted::Join {
                    join,
                    change,
                    public_records,
                }) => {
                    self.admission.charge_member(now, join.member());
                    self.stats.joins_accepted += 1;
                    self.events.push_back(Event::JoinAccepted {
                        member: join.member(),
                        group: join.group(),
                        epoch: join.epoch(),
                        slices: join.slices().clone(),
                        ifindex,
                        stamp: join.timestamp(),
                        age_ms: clock.wall.as_millis() as i64 - join.timestamp().as_millis() as i64,
                    });
                    if join.slices().is_empty() {
                        self.querier.handle_leave(now, ifindex, join.group());
                    } else {
                        self.querier.handle_membership(now, ifindex, join.group());
                    }
                    self.querier.handle_records(now, ifindex, &public_records);
                    self.sync_liveness(clock);
                    // A claim whose slices stayed the same changes nothing here, even when it
                    // came from a new address or interface (issue 13, item 10).
                    if !change.is_empty() {
                        self.replan(now, Change::Ownership(change.group));
                    }
                }
                Ok(Accepted::Plain { message, .. }) => self.plain(now, ifindex, None, message),
                // Signed by the member's key, refused for what it claims: the member's doing
                // (an attacker's copy of a join is a duplicate, charged below as a failure).
                Err(rej) if AUTHENTICATED_REFUSALS.contains(&rej.reason) => {
                    self.admission.charge_member(now, member);
                    self.report(ifindex, rej);
                }
                Err(rej) => self.rejected(now, ifindex, rej),
            }
        }
    }
}

/// Whether `member`'s claim on `group` in `table` is at `sender` on `ifindex`: a candidate from
/// there may be its refresh (class "expected").
fn at_claim<A: FamilyAddr>(
    table: &OwnershipTableOf<A>,
    group: A,
    member: MemberId,
    sender: A,
    ifindex: u32,
) -> bool {
    table
        .claims(group)
        .any(|(m, claim)| m == member && claim.sender == sender && claim.ifindex == ifindex)
}
