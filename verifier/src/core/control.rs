//! The routed control groups in the core (SPEC.md §3.9, §10.7): a verified shared join makes
//! its member (interface, address) one the control table carries; a leave, the claim hold
//! passing without a join, or the member key's revocation ends it.

use super::*;
use crate::plan::control::{ControlMember, ControlPlane};
use igmp_ext::verify::VerifiedJoin;

/// The control plane for `config`'s control groups on `interfaces`; their joins are shared.
/// A table an earlier verifier `left` keeps carrying until the adopt grace ends.
pub(super) fn plane(
    config: &RouterConfig,
    interfaces: &[Interface],
    left: bool,
    verifier: &mut JoinVerifier,
) -> ControlPlane {
    verifier.set_shared(config.control_groups.clone());
    let devices = interfaces
        .iter()
        .map(|i| (i.ifindex, i.name.clone()))
        .collect();
    ControlPlane::new(config.control_groups.clone(), devices).holding(left)
}

impl Router {
    /// A verified join of a control group: the member joins (slices) or leaves (none).
    pub(super) fn control_join(&mut self, clock: Clock, join: &VerifiedJoin) {
        self.admission.charge_member(timers(clock), join.member());
        self.stats.joins_accepted += 1;
        let joined = (!join.slices().is_empty()).then(|| ControlMember {
            ifindex: join.ifindex(),
            sender: join.sender(),
            expires: clock.mono.saturating_add(self.config.verifier.claim_hold),
            member_key: join.member_key(),
            issuer: join.issuer(),
        });
        let joining = joined.is_some();
        let mut ops = Vec::new();
        if self
            .control
            .join(join.group(), join.member(), joined, &mut ops)
        {
            info!(
                group = %join.group(), member = %join.member(), sender = %join.sender(),
                interface = %self.ifname(join.ifindex()), joining, "control group member"
            );
        }
        self.push_ops(ops);
    }

    /// Members whose hold passed go; the first write and retries.
    pub(super) fn control_tick(&mut self, clock: Clock) {
        let mut ops = Vec::new();
        for (group, member) in self.control.drop_where(clock.mono, |_| false, &mut ops) {
            info!(%group, %member, "control group member expired");
        }
        if self.adopt_until.is_none() {
            self.control.release();
        }
        self.control.tick(&mut ops);
        self.push_ops(ops);
    }

    /// Members whose member key is revoked or whose issuer is retired go at once (SPEC.md
    /// §9.7). A group whose keys cannot be had now keeps its members; they expire on their own.
    pub(super) fn control_keys(&mut self, clock: Clock, keys: &dyn KeySource) {
        let gone: Vec<(Ipv4Addr, igmp_ext::KeyId, igmp_ext::KeyId)> = self
            .control
            .members()
            .filter(|(group, _, c)| {
                keys.group_keys(*group, clock.wall).is_ok_and(|k| {
                    k.revoked_members.contains(&c.member_key)
                        || !k.keys.iter().any(|gk| gk.id == c.issuer)
                })
            })
            .map(|(group, _, c)| (group, c.member_key, c.issuer))
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        let gone = |c: &ControlMember| {
            gone.iter()
                .any(|&(_, key, issuer)| key == c.member_key && issuer == c.issuer)
        };
        for (group, member) in self.control.drop_where(clock.mono, gone, &mut ops) {
            info!(%group, %member, "control group member revoked or its issuer retired");
        }
        self.push_ops(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, config, setup, Lab, S1, S2};
    use super::*;
    use igmp_ext::Slice;

    fn control_lab() -> Lab {
        let mut c = config();
        // The fixture's group, certified for both members, as the control group.
        c.control_groups = vec![igmp_ext::fixtures::Fixture::new(2).group];
        Lab::new(c, setup(NativeDataplane::Nft))
    }

    fn control_texts(lab: &mut Lab) -> Vec<String> {
        lab.ops()
            .into_iter()
            .filter_map(|op| match op {
                DataplaneOp::ControlTable(b) => Some(b.text),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn shared_joins_from_two_links_are_carried_between_them_until_they_end() {
        let mut lab = control_lab();
        lab.router.handle_timeout(at(0));
        let first = control_texts(&mut lab);
        assert_eq!(first.len(), 1, "the table is written at the first tick");
        let group = lab.fixture.group;
        let (a0, a1) = (lab.fixture.members[0].addr, lab.fixture.members[1].addr);
        // The same slices at different epochs: shared, so both are members and nothing is owned.
        lab.join(at(1), 0, &[Slice::ALL], 3, S1);
        lab.join(at(1), 1, &[Slice::ALL], 1, S2);
        let texts = control_texts(&mut lab);
        let last = texts.last().expect("a write per new interface");
        assert!(last.contains(&format!("\"s1\" . {a0} : jump")), "{last}");
        assert!(last.contains(&format!("\"s2\" . {a1} : jump")), "{last}");
        assert!(last.contains("dup to \"s2\"") && last.contains("dup to \"s1\""));
        assert!(!last.contains("dup to \"c0\""), "no member on c0: {last}");
        assert_eq!(lab.router.verifier().ownership().claims(group).count(), 0);
        assert_eq!(lab.router.control.members().count(), 2);
        let status = lab.router.status(at(1), &Observed::default());
        let rows: Vec<(u32, &str)> = status
            .control
            .iter()
            .map(|r| (r.member, r.interface.as_str()))
            .collect();
        assert_eq!(rows, vec![(1, "s1"), (2, "s2")]);
        assert!(status.render_text().contains("control group members"));
        // A leave ends member 0's carrying at once.
        lab.join(at(2), 0, &[], 3, S1);
        let texts = control_texts(&mut lab);
        assert_eq!(texts.len(), 1);
        assert!(!texts[0].contains(&a0.to_string()), "{}", texts[0]);
        // Member 1's claim hold (22 s) passes without a join: it goes too.
        lab.router.handle_timeout(at(22));
        assert_eq!(lab.router.control.members().count(), 1);
        lab.router.handle_timeout(at(24));
        assert_eq!(lab.router.control.members().count(), 0);
        let texts = control_texts(&mut lab);
        assert!(!texts.concat().contains(&a1.to_string()), "{texts:?}");
    }

    #[test]
    fn a_revoked_member_key_ends_its_membership_at_the_key_check() {
        let mut lab = control_lab();
        lab.join(at(1), 0, &[Slice::ALL], 1, S1);
        assert_eq!(lab.router.control.members().count(), 1);
        let group = lab.fixture.group;
        let mut keys = lab.fixture.group_keys();
        keys.revoked_members.push(igmp_ext::KeyId::of(
            &lab.fixture.members[0].key.verifying_key(),
        ));
        lab.keys.insert(group, std::sync::Arc::new(keys));
        let keys = lab.keys.clone();
        lab.router.handle_keys(at(2), &keys);
        assert_eq!(lab.router.control.members().count(), 0);
    }

    /// A retired issuer (its group key no longer published) ends the memberships it certified
    /// at the key check, as it ends claims (SPEC.md §9.7).
    #[test]
    fn a_retired_issuer_ends_its_members_memberships_at_the_key_check() {
        let mut lab = control_lab();
        lab.join(at(1), 0, &[Slice::ALL], 1, S1);
        assert_eq!(lab.router.control.members().count(), 1);
        let group = lab.fixture.group;
        let mut keys = lab.fixture.group_keys();
        let other = igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
        keys.keys = vec![igmp_ext::verify::GroupKey::new(other.verifying_key())];
        lab.keys.insert(group, std::sync::Arc::new(keys));
        let keys = lab.keys.clone();
        lab.router.handle_keys(at(2), &keys);
        assert_eq!(lab.router.control.members().count(), 0);
    }

    /// A table an earlier verifier left (`keep_kernel_state`, or SIGKILL) keeps carrying its
    /// members through the adopt grace: a restart does not cut the control group between
    /// subnets while members answer the startup queries.
    #[test]
    fn a_left_table_carries_on_until_the_adopt_grace_ends() {
        let mut c = config();
        c.control_groups = vec![igmp_ext::fixtures::Fixture::new(2).group];
        let mut left = setup(NativeDataplane::Nft);
        left.control_table_left = true;
        let mut lab = Lab::new(c, left);
        lab.router.handle_timeout(at(0));
        lab.join(at(1), 0, &[Slice::ALL], 1, S1);
        lab.router.handle_timeout(at(2));
        assert!(control_texts(&mut lab).is_empty(), "held through the grace");
        lab.router.handle_timeout(at(3));
        let texts = control_texts(&mut lab);
        let a0 = lab.fixture.members[0].addr;
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(
            texts[0].contains(&format!("\"s1\" . {a0} : jump")),
            "{}",
            texts[0]
        );
    }
}
