//! The verifier's expensive part (SPEC.md §5 steps 13-20), for candidates that passed every
//! cheap check: certificate signatures, the join signatures in one batch, and only then the
//! claim's slice set and the ownership table.

use super::*;
use crate::join::effective_slices;
use crate::slice::{StepBudget, TooComplex};

impl JoinVerifier {
    /// The expensive part for candidates from [`JoinVerifier::precheck`], in one go: each
    /// unchecked certificate is decoded and its issuer's signature checked (then cached), the
    /// join signatures are checked in one batch (one by one when the batch fails, so that only
    /// the bad ones are refused; and for the next call too, while forgeries keep coming), and
    /// only then is each claim's slice set built and applied, in
    /// the order given. One result per candidate, in that order; each is counted.
    pub fn verify(
        &mut self,
        now: impl Into<Clock>,
        candidates: Vec<Candidate>,
    ) -> Vec<Result<Accepted, Rejection>> {
        let now: Clock = now.into();
        let certified: Vec<Result<Authentic, Rejection>> = candidates
            .into_iter()
            .map(|c| self.certify(now.wall, c))
            .collect();
        let batch_ok = self.batch_pays && {
            let pending: Vec<&Authentic> =
                certified.iter().filter_map(|a| a.as_ref().ok()).collect();
            let messages: Vec<Vec<u8>> = pending
                .iter()
                .map(|a| a.candidate.join.signed_message(a.candidate.sender))
                .collect();
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let sigs: Vec<_> = pending
                .iter()
                .map(|a| *a.candidate.join.signature())
                .collect();
            let vks: Vec<_> = pending
                .iter()
                .map(|a| a.cert.cert.body().member_key)
                .collect();
            pending.len() > 1 && ed25519_dalek::verify_batch(&refs, &sigs, &vks).is_ok()
        };
        let mut out = Vec::with_capacity(certified.len());
        for a in certified {
            let result = a.and_then(|a| {
                if !batch_ok {
                    check_signature(&a)?;
                }
                self.commit(now, a)
            });
            self.count(&result);
            out.push(result);
        }
        // Batches again once a round came through without a forgery.
        self.batch_pays = !out
            .iter()
            .any(|r| matches!(r, Err(e) if e.reason == Reason::BadSignature));
        out
    }

    /// The certificate chain for one candidate: the group key's signature over an unchecked
    /// certificate (cached once checked, keyed by the exact bytes), then revocation, validity
    /// and the group.
    fn certify(&mut self, now: Timestamp, c: Candidate) -> Result<Authentic, Rejection> {
        let with_sender = |mut r: Rejection| {
            r.sender = Some(c.sender);
            r
        };
        let issuer = match &c.cert {
            CertificateState::Known(cert) => {
                let cert = cert.clone();
                return Ok(Authentic { candidate: c, cert });
            }
            CertificateState::Unchecked { issuer } => *issuer,
        };
        // An earlier candidate of the same batch may have checked the same bytes.
        let cert = match self.cached_certificate(c.join.certificate_bytes(), &c.keys) {
            Some(hit) => hit,
            None => {
                let cert = c
                    .join
                    .certificate()
                    .and_then(|u| u.verify(&issuer, now))
                    .map_err(|e| with_sender(cert_rejection(e)))?;
                let entry = Arc::new(CachedCertificate {
                    member_key_id: KeyId::of(&cert.body().member_key),
                    cert,
                    issuer,
                });
                if self.certificates.len() >= self.config.certificate_cache {
                    // Dropping everything keeps the bound simple; refreshes repopulate it at once.
                    self.certificates.clear();
                }
                self.certificates
                    .insert(c.join.certificate_bytes().to_vec(), entry.clone());
                entry
            }
        };
        admit_certificate(&cert, &c.keys, c.group(), now).map_err(with_sender)?;
        Ok(Authentic { candidate: c, cert })
    }

    /// The claim's slices within the certificate's, slice exclusivity, then the duplicate
    /// record. Nothing changes unless every step succeeds. The slice set is built here, after
    /// the signature: before it, a join's slices cost a length check only.
    fn commit(&mut self, now: Clock, a: Authentic) -> Result<Accepted, Rejection> {
        let Authentic { candidate: p, cert } = a;
        let body = cert.cert.body();
        let member = body.member_id;
        let claims = p.join.claims();
        let reject = |reason, detail: String| Rejection {
            reason,
            detail,
            sender: Some(p.sender),
        };
        // The entries are the member's choice: their set and its check against the
        // certificate's cost at most a budget linear in the slices of both (SPEC.md §3.7),
        // refused as too large beyond it.
        let too_complex =
            |e: TooComplex| reject(Reason::TooLarge, format!("{member}'s join slices: {e}"));
        let mut budget =
            StepBudget::for_slices(claims.entries.len() + claims.standby.len() + body.slices.len());
        let slices = effective_slices(&claims.entries, &mut budget).map_err(too_complex)?;
        let outside = slices
            .try_difference(&body.slices, &mut budget)
            .map_err(too_complex)?;
        if !outside.is_empty() {
            return Err(reject(
                Reason::OutsideCertificate,
                format!("{member} claims {outside} beyond its certificate"),
            ));
        }
        // Standby units are what the member would own: the certificate bounds them alike.
        let standby = effective_slices(&claims.standby, &mut budget).map_err(too_complex)?;
        let outside = standby
            .try_difference(&body.slices, &mut budget)
            .map_err(too_complex)?;
        if !outside.is_empty() {
            return Err(reject(
                Reason::OutsideCertificate,
                format!("{member} stands by for {outside} beyond its certificate"),
            ));
        }
        // A duplicate inside one burst is only visible here.
        replay_admission(&mut self.replay, now.wall, member, &claims.nonce)
            .map_err(|(reason, detail)| reject(reason, detail))?;
        let claim = Claim {
            slices: slices.clone(),
            epoch: claims.epoch,
            ifindex: p.ifindex,
            sender: p.sender,
            expires: now.mono.saturating_add(self.config.claim_hold),
            member_key: cert.member_key_id,
            issuer: body.issuer,
            standby,
            liveness: claims.liveness.clone(),
            waiting: SliceSet::new(),
        };
        // A shared group's join owns nothing: no epoch fence, no conflict (SPEC.md §3.9).
        let change = if self.is_shared(claims.group) {
            OwnershipChange::default()
        } else {
            self.ownership
                .apply(now.wall, claims.group, member, claim)
                .map_err(|e| match e {
                    ClaimError::StaleEpoch { .. } => reject(Reason::StaleEpoch, e.to_string()),
                    ClaimError::Conflict { .. } => reject(Reason::SliceConflict, e.to_string()),
                })?
        };
        let recorded = self.replay.insert(now.wall, member, claims.nonce);
        debug_assert!(recorded, "room was checked and the nonce was absent");
        Ok(Accepted::Join {
            join: VerifiedJoin {
                member,
                member_key: cert.member_key_id,
                issuer: body.issuer,
                group: claims.group,
                sender: p.sender,
                ifindex: p.ifindex,
                slices,
                epoch: claims.epoch,
                timestamp: claims.timestamp,
                record_type: claims.record_type,
            },
            change,
            public_records: p.public_records,
        })
    }
}

/// Revocation, validity now, and the group among the certificate's (SPEC.md §5 steps 13-15).
pub(super) fn admit_certificate(
    entry: &CachedCertificate,
    keys: &GroupKeys,
    group: Ipv4Addr,
    now: Timestamp,
) -> Result<(), Rejection> {
    if keys.revoked_members.contains(&entry.member_key_id) {
        return Err(Rejection::new(
            Reason::Revoked,
            format!("member key {} is revoked", entry.member_key_id),
        ));
    }
    entry.cert.check_validity(now).map_err(cert_rejection)?;
    let body = entry.cert.body();
    if !body.groups.contains(&group) {
        return Err(Rejection::new(
            Reason::GroupNotAllowed,
            format!("{} is not certified for {group}", body.member_id),
        ));
    }
    Ok(())
}

fn check_signature(a: &Authentic) -> Result<(), Rejection> {
    let p = &a.candidate;
    if signature::verify(
        &a.cert.cert.body().member_key,
        &p.join.signed_message(p.sender),
        p.join.signature(),
    ) {
        Ok(())
    } else {
        Err(Rejection {
            reason: Reason::BadSignature,
            detail: format!(
                "join signature by {} does not verify",
                a.cert.cert.body().member_id
            ),
            sender: Some(p.sender),
        })
    }
}
