//! A compromised but certified member in the simulator (issue 13, SPEC.md §9.7): the node keeps
//! its real key and certificate, so everything it sends passes the receive pipeline, and it
//! says whatever it likes. Tests and the attack benchmark drive it through these helpers and
//! read [`Sim::units_lost`].

use super::Sim;
use crate::wire::{
    EpochId, Heartbeat, Message, OperatorAuthority, Proposal, Request, RequestAction,
};
use igmp_ext::ed25519_dalek::SigningKey;
use igmp_ext::fixtures::Fixture;
use igmp_ext::operator::{sign_request, OperatorCertificateBody};
use igmp_ext::{KeyId, Timestamp};

impl Sim {
    /// Node `i` multicasts a proposal it made up (any epoch id, members, weights and owners),
    /// with `header_epoch` in its header.
    pub fn forge_proposal(
        &mut self,
        i: usize,
        header_epoch: u64,
        id: EpochId,
        members: Vec<(u32, u32)>,
        owners: Vec<u8>,
    ) {
        let mut p = Proposal {
            id,
            members,
            owners,
            base: EpochId::default(),
            signature: Vec::new(),
            scope: None,
        };
        // The best a compromised member can do: sign it with its own (certified) key.
        p.sign(self.cluster_id(), &self.nodes[i].identity.key);
        self.forge(i, header_epoch, &Message::Proposal(p));
    }

    /// Node `i` multicasts a heartbeat it made up (any weight, `heard` list, committed epoch),
    /// with `header_epoch` in its header.
    pub fn forge_heartbeat(&mut self, i: usize, header_epoch: u64, hb: Heartbeat) {
        self.forge(i, header_epoch, &Message::Heartbeat(hb));
    }

    /// Node `i` multicasts an operator request without operator authority.
    pub fn forge_request(&mut self, i: usize, request_id: u64, action: RequestAction) {
        let r = Request {
            request_id,
            action,
            authority: None,
        };
        self.forge(i, 0, &Message::Request(r));
    }

    /// Node `i` signs and multicasts `m` as it is.
    pub fn forge(&mut self, i: usize, header_epoch: u64, m: &Message) {
        let now = self.local_now(i);
        if let Some(ep) = self.endpoint_mut(i) {
            ep.danger_send_raw(now, header_epoch, m);
        }
        self.flush(i);
    }

    /// The keystore publishes `revoked` member key ids (and the group key): every running node
    /// is told, as the server's keystore refresh tells its endpoint.
    pub fn publish_revocations(&mut self, revoked: &[KeyId]) {
        let keys = [self.group_key];
        for i in 0..self.len() {
            let now = self.local_now(i);
            if let Some(ep) = self.endpoint_mut(i) {
                ep.set_published(now, &keys, revoked);
            }
            self.flush(i);
        }
    }

    /// An operator's authority for `action` at node `i`'s wall clock: a certificate from the
    /// fixture group key for a fixed-seed operator key, and its signature (as `manycastctl`
    /// makes them).
    pub fn operator_authority(&self, i: usize, action: &RequestAction) -> OperatorAuthority {
        let group = Fixture::new(0).group_key;
        let operator = SigningKey::from_bytes(&[0x0b; 32]);
        let cluster = self.nodes[0].config.cluster;
        let cert = OperatorCertificateBody {
            operator_key: operator.verifying_key(),
            issuer: KeyId::of(&group.verifying_key()),
            not_before: Timestamp::from_secs(1_767_225_600),
            not_after: Timestamp::from_secs(1_830_297_600),
            cluster,
        }
        .issue(&group)
        .expect("the fixture group key issues it");
        let issued_at = self.local_now(i).wall;
        OperatorAuthority {
            certificate: cert.as_bytes().to_vec(),
            issued_at: issued_at.as_millis(),
            signature: sign_request(&operator, cluster, issued_at, &action.signed_bytes()).to_vec(),
        }
    }

    /// Node `i` sends `action` with an operator's authority (and acts on it itself).
    pub fn operator_request(&mut self, i: usize, action: RequestAction) -> u64 {
        let authority = self.operator_authority(i, &action);
        let now = self.local_now(i);
        let id = self
            .endpoint_mut(i)
            .map(|e| e.request_with_authority(now, action, Some(authority)))
            .unwrap_or(0);
        self.flush(i);
        id
    }

    fn cluster_id(&self) -> u32 {
        u32::from(self.nodes[0].config.cluster)
    }

    /// The member key id of node `i`'s certificate.
    pub fn member_key_id(&self, i: usize) -> KeyId {
        KeyId::of(&self.nodes[i].identity.certificate.body().member_key)
    }

    /// Units the `honest` nodes do not all see served: a unit counts when, in some honest
    /// node's committed allocation, it has no owner or its owner is not running or is one of
    /// `excluded` (a revoked member), or when the honest nodes' allocations disagree on it.
    /// A node that has not committed counts every unit.
    pub fn units_lost(&self, honest: &[usize], excluded: &[usize]) -> usize {
        let units = self
            .nodes
            .first()
            .map_or(0, |n| n.config.slicing.unit_count());
        let running: Vec<igmp_ext::MemberId> = self
            .running()
            .into_iter()
            .filter(|i| !excluded.contains(i))
            .map(Self::member_id)
            .collect();
        let mut lost = 0;
        for u in 0..units {
            let mut owner = None;
            let mut bad = false;
            for &h in honest {
                let o = self
                    .endpoint(h)
                    .and_then(|e| e.committed())
                    .and_then(|c| c.allocation.unit_owners().get(u).copied().flatten());
                match o {
                    Some(m) if running.contains(&m) => {}
                    _ => bad = true,
                }
                if owner.is_some_and(|x| x != o) {
                    bad = true;
                }
                owner = Some(o);
            }
            if bad {
                lost += 1;
            }
        }
        lost
    }
}
