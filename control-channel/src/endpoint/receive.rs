//! The receive pipeline (SPEC.md §9.2): cluster, sender, timeliness, certificate, signature and
//! replay checks in that order, then the peer record, then dispatch to the module that owns the
//! message. A refused datagram changes nothing.

use super::{DropReason, Endpoint, Event, Peer};
use crate::replay::ReplayWindow;
use crate::time::{signed_diff_ms, Clock};
use crate::wire::{self, ControlPacket, Leave, LeaveKind, Message};
use core::net::SocketAddr;
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::{KeyId, MemberCertificate, MemberId, Timestamp, UnverifiedCertificate};

impl Endpoint {
    pub(super) fn accept(
        &mut self,
        now: Clock,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        let packet = ControlPacket::new_checked(bytes)?;
        if packet.cluster() != self.cluster {
            return Err(DropReason::WrongCluster);
        }
        let sender = packet.sender();
        if sender == self.me {
            return Err(DropReason::OwnMessage);
        }
        if packet.timestamp().abs_diff(now.wall) > self.config.timeliness_window {
            self.note_untimely_peer(now, &packet);
            return Err(DropReason::Untimely);
        }
        let now_wall = now.wall;
        let seq = packet.sequence();
        let mut new_certificate = None;
        let message;
        if packet.message_type() == wire::MessageType::Hello {
            let m = Message::decode(packet.message_type(), packet.body())?;
            let Message::Hello(hello) = &m else {
                return Err(DropReason::Malformed);
            };
            let key = match self.peers.get(&sender) {
                Some(p) if p.certificate.as_bytes() == hello.certificate.as_slice() => {
                    // Cached: trusted when it was verified; `set_published` drops it if that
                    // changed since.
                    p.certificate
                        .check_validity(now_wall)
                        .map_err(|_| DropReason::BadCertificate)?;
                    p.key
                }
                _ => {
                    let cert = self.verify_certificate(now_wall, sender, &hello.certificate)?;
                    let key = cert.body().member_key;
                    new_certificate = Some(cert);
                    key
                }
            };
            if !packet.verify_signature(&key) {
                return Err(DropReason::BadSignature);
            }
            if let Some(p) = self.peers.get(&sender) {
                if !p.window.is_fresh(seq) {
                    return Err(DropReason::Replayed);
                }
            }
            message = m;
        } else {
            if self.revoked_members.contains(&sender) {
                return Err(DropReason::Revoked);
            }
            let peer = self.peers.get(&sender).ok_or(DropReason::UnknownSender)?;
            peer.certificate
                .check_validity(now_wall)
                .map_err(|_| DropReason::BadCertificate)?;
            if !packet.verify_signature(&peer.key) {
                return Err(DropReason::BadSignature);
            }
            if !peer.window.is_fresh(seq) {
                return Err(DropReason::Replayed);
            }
            message = Message::decode(packet.message_type(), packet.body())?;
        }

        // Every check passed: record.
        let first_contact = !self.peers.contains_key(&sender);
        if let Some(cert) = new_certificate {
            // A certificate that is not revoked: a re-keyed member speaks again.
            self.revoked_members.remove(&sender);
            let key = cert.body().member_key;
            match self.peers.get_mut(&sender) {
                Some(p) => {
                    p.certificate = cert;
                    p.key = key;
                }
                None => {
                    self.peers.insert(
                        sender,
                        Peer {
                            certificate: cert,
                            key,
                            addr: None,
                            direct_path: None,
                            weight: 0,
                            window: ReplayWindow::default(),
                            last_direct: None,
                            alive_estimate: None,
                            clock_offset: None,
                            live: false,
                            left_at: None,
                            committed: None,
                            advert_queries: 0,
                            load: Vec::new(),
                            last_query: None,
                        },
                    );
                }
            }
        }
        // The header's epoch is informational: epochs advance only through proposals that pass
        // the decision rule (SPEC.md §9.7), never because a header says so.
        let Some(peer) = self.peers.get_mut(&sender) else {
            return Err(DropReason::UnknownSender);
        };
        peer.window.record(seq);
        peer.addr = Some(from);
        peer.clock_offset = Some((signed_diff_ms(packet.timestamp(), now.wall), now.mono));
        let is_leave = matches!(
            message,
            Message::Leave(Leave {
                kind: LeaveKind::Leave
            })
        );
        if !is_leave && peer.left_at.is_none_or(|l| seq > l) {
            peer.left_at = None;
            peer.last_direct = Some(now.mono);
            let t = now.mono;
            peer.alive_estimate = Some(peer.alive_estimate.map_or(t, |a| a.max(t)));
        }
        self.dispatch(now, sender, from, seq, message, first_contact);
        Ok(())
    }

    /// The group keys currently published (the keystore's record): certificates issued by any
    /// of them are accepted from peers met from now on, besides those of the key that issued
    /// ours. Peers already met keep their verified certificates; a member whose issuer is
    /// withdrawn leaves by itself (its own keystore check, SPEC.md §11.1).
    pub fn set_group_keys(&mut self, published: &[VerifyingKey]) {
        if self.published_keys.is_some() {
            self.published_keys = Some(published.to_vec());
        }
        self.other_group_keys = published
            .iter()
            .filter(|k| **k != self.group_key)
            .copied()
            .collect();
    }

    /// What the keystore publishes now (SPEC.md §9.7): the group keys and the revoked member
    /// (and operator) key ids. Peers whose member key is revoked, or whose certificate's issuer
    /// is no longer published, are dropped at once: out of the view, the certificate cache and
    /// the transfers, each reported as [`Event::MemberRevoked`]; whatever they send afterwards
    /// is refused (`revoked`, or `bad-certificate` for a retired issuer). An empty key list
    /// changes nothing (a record always publishes at least one key).
    pub fn set_published(&mut self, now: Clock, published: &[VerifyingKey], revoked: &[KeyId]) {
        if published.is_empty() {
            return;
        }
        self.set_group_keys(published);
        self.published_keys = Some(published.to_vec());
        self.revoked = revoked.iter().copied().collect();
        let issuers: Vec<KeyId> = published.iter().map(KeyId::of).collect();
        let dropped: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                let body = p.certificate.body();
                self.revoked.contains(&KeyId::of(&body.member_key))
                    || !issuers.contains(&body.issuer)
            })
            .map(|(&m, _)| m)
            .collect();
        for m in dropped {
            self.drop_member(m);
        }
        if !self.left {
            self.maybe_propose(now);
        }
    }

    /// Forgets a peer whose credentials no longer hold.
    fn drop_member(&mut self, m: MemberId) {
        self.peers.remove(&m);
        self.revoked_members.insert(m);
        self.last_request.remove(&m);
        self.outgoing.retain(|&(to, _), _| to != m);
        self.incoming.retain(|&(from, _), _| from != m);
        if self
            .deferred
            .as_ref()
            .is_some_and(|d| d.proposal.id.proposer == m.0)
        {
            self.deferred = None;
        }
        self.events.push_back(Event::MemberRevoked(m));
    }

    fn verify_certificate(
        &self,
        now: Timestamp,
        sender: MemberId,
        bytes: &[u8],
    ) -> Result<MemberCertificate, DropReason> {
        let unverified =
            UnverifiedCertificate::decode(bytes).map_err(|_| DropReason::BadCertificate)?;
        // Revoked keys are refused before any signature is checked: they cost nothing more.
        if self
            .revoked
            .contains(&KeyId::of(&unverified.unverified_body().member_key))
        {
            return Err(DropReason::Revoked);
        }
        let issuer = unverified.unverified_body().issuer;
        let key = self
            .trusted_group_keys()
            .find(|k| KeyId::of(k) == issuer)
            .copied()
            .ok_or(DropReason::BadCertificate)?;
        let cert = unverified
            .verify(&key, now)
            .map_err(|_| DropReason::BadCertificate)?;
        let body = cert.body();
        // The certificate must name the header's sender and allow this cluster's group.
        let allowed = match self.config.group6 {
            Some(g) => cert.ipv6().groups.contains(&g),
            None => body.groups.contains(&self.config.cluster),
        };
        if body.member_id != sender || !allowed {
            return Err(DropReason::BadCertificate);
        }
        Ok(cert)
    }

    /// The group keys whose certificates are accepted: the published ones once the keystore
    /// told us, else ours and any others set.
    pub(super) fn trusted_group_keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        let published = self.published_keys.as_deref();
        let fallback = match published {
            Some(_) => None,
            None => Some(core::iter::once(&self.group_key).chain(&self.other_group_keys)),
        };
        published
            .into_iter()
            .flatten()
            .chain(fallback.into_iter().flatten())
    }

    /// An untimely datagram from a peer already met: if its signature and sequence number hold,
    /// its timestamp is the peer's clock and it is recorded as that peer's clock offset, so that
    /// both sides can say whose clock is off (SPEC.md §9.3, "Clocks"). Nothing else changes: the
    /// datagram is still refused, and its sequence number is not recorded.
    fn note_untimely_peer(&mut self, now: Clock, packet: &ControlPacket<&[u8]>) {
        let Some(peer) = self.peers.get_mut(&packet.sender()) else {
            return;
        };
        if !packet.verify_signature(&peer.key) || !peer.window.is_fresh(packet.sequence()) {
            return;
        }
        peer.clock_offset = Some((signed_diff_ms(packet.timestamp(), now.wall), now.mono));
    }

    /// Hands a verified message to the part of the endpoint that owns it.
    fn dispatch(
        &mut self,
        now: Clock,
        sender: MemberId,
        from: SocketAddr,
        seq: u64,
        message: Message,
        first_contact: bool,
    ) {
        match message {
            Message::Hello(h) => self.on_hello(now, sender, h, first_contact),
            Message::Heartbeat(hb) => self.on_heartbeat(now, sender, hb),
            Message::Proposal(p) => self.on_proposal(now, sender, seq, p),
            Message::Commit(c) => self.on_commit(sender, c),
            Message::Leave(l) => self.on_leave(sender, seq, l),
            Message::Forward(f) => self.on_forward(sender, f),
            Message::Forward6(f) => self.on_forward6(sender, f),
            Message::DirectPath(d) => self.on_direct_path(sender, d),
            Message::DirectPath6(d) => self.on_direct_path6(sender, from, d),
            Message::StateQuery(q) => self.on_state_query(now, sender, seq, q),
            Message::StateChunk(c) => self.on_chunk(now, sender, seq, c),
            Message::StateAck(a) => self.on_ack(now, sender, a),
            Message::Nack(n) => self.events.push_back(Event::Nacked {
                from: sender,
                refused_sequence: n.refused_sequence,
                reason: n.reason,
            }),
            Message::Request(r) => self.on_request(now, sender, r),
        }
    }
}
