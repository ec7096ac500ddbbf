//! The member's credentials checked against the dns-keystore (`[keystore]`, SPEC.md §11.1):
//! [`check`] is sans-IO (a validated group record, our certificate record if any, and `now` in;
//! the group key that issued our certificate, or the named reason it no longer stands, out);
//! [`fetch`] and [`fetch_at_start`] talk to the keystore through the DNSSEC-validating
//! [`KeystoreClient`].

use crate::config::{InvalidConfig, KeystoreConfig};
use dns_keystore::cert_record::CertRecord;
use dns_keystore::client::{ClientConfig, FetchError, KeystoreClient};
use dns_keystore::record::GroupRecord;
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::time::{Clock, Instant};
use igmp_ext::{KeyId, MemberCertificate, Timestamp, UnverifiedCertificate};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Why our credentials do not match what the keystore publishes. Each is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    #[error("the keystore no longer publishes a record for our group (withdrawn)")]
    RecordWithdrawn,
    #[error("group {0} is published as public (no group key)")]
    NotProtected(Ipv4Addr),
    #[error("the published record for {group} is not valid now (t={not_before}, x={not_after})")]
    RecordNotValid {
        group: Ipv4Addr,
        not_before: Timestamp,
        not_after: Timestamp,
    },
    #[error(
        "our certificate's issuer {issuer} is not among the published group keys ({published})"
    )]
    IssuerNotPublished { issuer: KeyId, published: String },
    #[error("our certificate does not verify against published group key {issuer}: {detail}")]
    CertificateInvalid { issuer: KeyId, detail: String },
    #[error("our member key {0} is revoked in the keystore (r=)")]
    Revoked(KeyId),
    #[error("the keystore publishes no certificate for our member key {0} (withdrawn?)")]
    CertificateWithdrawn(KeyId),
    #[error("the keystore publishes another certificate for our member key {0}")]
    CertificateDiffers(KeyId),
}

impl Mismatch {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Mismatch::RecordWithdrawn => "record-withdrawn",
            Mismatch::NotProtected(_) => "not-protected",
            Mismatch::RecordNotValid { .. } => "record-not-valid",
            Mismatch::IssuerNotPublished { .. } => "issuer-not-published",
            Mismatch::CertificateInvalid { .. } => "certificate-invalid",
            Mismatch::Revoked(_) => "revoked",
            Mismatch::CertificateWithdrawn(_) => "certificate-withdrawn",
            Mismatch::CertificateDiffers(_) => "certificate-differs",
        }
    }
}

/// What one fetch found: the group record and its TTL, and our certificate record if published.
#[derive(Debug, Clone)]
pub struct Published {
    pub record: GroupRecord,
    pub ttl: Duration,
    pub certificate: Option<CertRecord>,
}

/// Checks our certificate against the published record: the record is protected and valid now,
/// the issuer of our certificate is one of its keys (several during a rotation), the certificate
/// verifies against that key and is valid now, our member key is not in `r=`, and, with
/// `require_certificate`, the keystore publishes our certificate byte for byte.
/// Returns the issuing group key and the verified certificate.
pub fn check(
    cert: &UnverifiedCertificate,
    published: &Published,
    require_certificate: bool,
    now: Timestamp,
) -> Result<(VerifyingKey, MemberCertificate), Mismatch> {
    let record = &published.record;
    if !record.protected {
        return Err(Mismatch::NotProtected(record.group));
    }
    if !record.valid_at(now) {
        return Err(Mismatch::RecordNotValid {
            group: record.group,
            not_before: record.not_before,
            not_after: record.not_after,
        });
    }
    let body = cert.unverified_body();
    let Some(key) = record.keys.iter().find(|k| KeyId::of(k) == body.issuer) else {
        return Err(Mismatch::IssuerNotPublished {
            issuer: body.issuer,
            published: record
                .keys
                .iter()
                .map(|k| KeyId::of(k).to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let verified = cert
        .clone()
        .verify(key, now)
        .map_err(|e| Mismatch::CertificateInvalid {
            issuer: body.issuer,
            detail: e.to_string(),
        })?;
    let member = KeyId::of(&body.member_key);
    if record.revoked.contains(&member) {
        return Err(Mismatch::Revoked(member));
    }
    // Only with `require_certificate` is the published certificate the reference: otherwise an
    // admin who publishes a renewed one before installing it would stop the member.
    match &published.certificate {
        Some(c) if require_certificate && c.certificate().as_bytes() != cert.as_bytes() => {
            Err(Mismatch::CertificateDiffers(member))
        }
        None if require_certificate => Err(Mismatch::CertificateWithdrawn(member)),
        _ => Ok((*key, verified)),
    }
}

/// What a refresh while running changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Our credentials stopped matching; the daemon leaves at `leave_at` unless it clears.
    Mismatch {
        reason: Mismatch,
        leave_at: Timestamp,
    },
    /// They match again (a revocation undone, our issuer published again).
    Cleared,
    /// The keystore did not answer or did not validate; nothing else changes (the verifier
    /// keeps its cached keys for `max_stale` too).
    FetchFailed(String),
}

/// The running side (sans-IO): feeds each refresh's outcome in, tells the daemon when to leave.
/// A mismatch does not stop the member at once: it keeps serving for one record TTL, the
/// longest a verifier may still hold the previous record, so its claims are refused no later
/// than it leaves; then it leaves the cluster and exits (SPEC.md §11.1).
#[derive(Debug, Clone)]
pub struct Watch {
    cert: UnverifiedCertificate,
    require_certificate: bool,
    /// The mismatch, when it began to count (wall, for the log) and when its grace ends
    /// (monotonic: a step of the wall clock neither shortens nor stretches it, issue 17).
    problem: Option<(Mismatch, Timestamp, Instant)>,
    refresh_failures: u64,
    /// When the last validated answer stops being trusted: its fetch + TTL + `max_stale`.
    trusted_until: Instant,
    max_stale: Duration,
    /// The TTL of the last validated record: the grace of a withdrawn one.
    ttl: Duration,
}

impl Watch {
    /// `cert` is our certificate as read from its file (checked again on every refresh);
    /// `started` and `ttl` are the time and TTL of the validated answer the daemon started on.
    pub fn new(
        cert: UnverifiedCertificate,
        require_certificate: bool,
        max_stale: Duration,
        started: impl Into<Clock>,
        ttl: Duration,
    ) -> Self {
        let started: Clock = started.into();
        Watch {
            cert,
            require_certificate,
            problem: None,
            refresh_failures: 0,
            trusted_until: started.mono.saturating_add(ttl + max_stale),
            max_stale,
            ttl,
        }
    }

    /// True once no validated answer has come for TTL + `max_stale`: verifiers with the same
    /// setting then refuse every join of the group (fail closed). Only reported (metrics): the
    /// member cannot help it by leaving, and leaving would take it out when the keystore returns.
    pub fn stale(&self, now: impl Into<Clock>) -> bool {
        now.into().mono > self.trusted_until
    }

    pub fn handle_fetch(
        &mut self,
        now: impl Into<Clock>,
        fetched: Result<Published, FetchError>,
    ) -> Option<WatchEvent> {
        let clock: Clock = now.into();
        let now = clock.wall;
        // A denial (of the group record or of our certificate's) is not DNSSEC-proven (the
        // client does not validate denials): anyone on the path can forge one, so it is a
        // failed fetch, never a reason to leave (issue 13). Only validated answers (a
        // revocation, a retired issuer, a replaced certificate) make the member leave.
        let checked = match fetched {
            Ok(p) => {
                self.trusted_until = clock.mono.saturating_add(p.ttl + self.max_stale);
                self.ttl = p.ttl;
                check(&self.cert, &p, self.require_certificate, now).map(|_| ())
            }
            Err(e) => {
                self.refresh_failures += 1;
                return Some(WatchEvent::FetchFailed(e.to_string()));
            }
        };
        if let Err(Mismatch::CertificateWithdrawn(member)) = checked {
            self.refresh_failures += 1;
            return Some(WatchEvent::FetchFailed(format!(
                "the keystore denies a certificate for our member key {member} (unproven)"
            )));
        }
        match checked {
            Ok(()) => self.problem.take().map(|_| WatchEvent::Cleared),
            Err(reason) => {
                if self.problem.as_ref().is_some_and(|(r, _, _)| *r == reason) {
                    return None;
                }
                // A new reason keeps the first deadline: the clock started at the first one.
                let (leave_at, deadline) = self.problem.as_ref().map_or(
                    (
                        now.saturating_add(self.ttl),
                        clock.mono.saturating_add(self.ttl),
                    ),
                    |(_, t, d)| (*t, *d),
                );
                self.problem = Some((reason.clone(), leave_at, deadline));
                Some(WatchEvent::Mismatch { reason, leave_at })
            }
        }
    }

    /// The reason to leave, once its grace has run out.
    pub fn poll_leave(&self, now: impl Into<Clock>) -> Option<&Mismatch> {
        let now = now.into().mono;
        self.problem
            .as_ref()
            .filter(|(_, _, deadline)| now >= *deadline)
            .map(|(r, _, _)| r)
    }

    pub fn problem(&self) -> Option<&Mismatch> {
        self.problem.as_ref().map(|(r, _, _)| r)
    }

    pub fn refresh_failures(&self) -> u64 {
        self.refresh_failures
    }
}

/// The client's settings with the trust anchor read from its file; the error is one line.
pub fn client_config(ks: &KeystoreConfig) -> Result<ClientConfig, InvalidConfig> {
    let path = &ks.trust_anchor;
    let bad = |e: &dyn std::fmt::Display| {
        InvalidConfig(format!("keystore.trust_anchor {}: {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
    let anchor = dns_keystore::validate::TrustAnchor::parse(&text).map_err(|e| bad(&e))?;
    let mut c = ClientConfig::new(ks.server, anchor);
    if let Some(ms) = ks.max_stale_ms {
        c.max_stale = Duration::from_millis(ms);
    }
    Ok(c)
}

/// Fetches and DNSSEC-validates the group record and, with `member` (only under
/// `require_certificate`: nothing else reads it), that key's certificate record (absent is `None`).
pub async fn fetch(
    client: &KeystoreClient,
    group: Ipv4Addr,
    member: Option<KeyId>,
    now: Timestamp,
) -> Result<Published, FetchError> {
    let (record, ttl, _) = client.fetch(group, now).await?;
    let certificate = match member {
        None => None,
        Some(member) => match client.fetch_certificate(member, now).await {
            Ok((c, _, _)) => Some(c),
            Err(FetchError::NoRecord) => None,
            Err(e) => return Err(e),
        },
    };
    Ok(Published {
        record,
        ttl: Duration::from_secs(u64::from(ttl.max(1))),
        certificate,
    })
}

/// [`fetch`] at start: an unreachable keystore is tried again until `bound` has passed; any
/// other failure (no record, validation, a bad record) is final at once.
pub async fn fetch_at_start(
    client: &KeystoreClient,
    group: Ipv4Addr,
    member: Option<KeyId>,
    bound: Duration,
) -> Result<Published, FetchError> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let attempt = tokio::time::timeout_at(
            deadline,
            fetch(client, group, member, daemon_kit::wall_clock()),
        )
        .await;
        match attempt {
            Ok(Err(FetchError::Unreachable(why))) => {
                if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
                    return Err(FetchError::Unreachable(format!(
                        "{why} (gave up after {bound:?})"
                    )));
                }
                tracing::warn!("keystore: {why}; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(other) => return other,
            Err(_) => {
                return Err(FetchError::Unreachable(format!(
                    "no validated answer within {bound:?}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{Fixture, NOW};

    fn published(f: &Fixture, keys: Vec<VerifyingKey>) -> Published {
        Published {
            record: GroupRecord {
                group: Ipv4Addr::new(232, 1, 1, 1),
                name: "web".into(),
                owner: "ops".into(),
                protected: true,
                keys,
                not_before: Timestamp::from_secs(NOW.as_millis() / 1000 - 3600),
                not_after: Timestamp::from_secs(NOW.as_millis() / 1000 + 3600),
                revoked: Vec::new(),
                vip: None,
            },
            ttl: Duration::from_secs(300),
            certificate: Some(
                CertRecord::new(
                    igmp_ext::UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).unwrap(),
                )
                .unwrap(),
            ),
        }
    }

    #[test]
    fn each_mismatch_is_named() {
        let f = Fixture::new(2);
        let other = igmp_ext::ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]).verifying_key();
        let cert = &UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).unwrap();
        let group_key = f.group_key.verifying_key();
        let me = KeyId::of(&f.members[0].key.verifying_key());
        let good = published(&f, vec![group_key]);
        assert_eq!(check(cert, &good, true, NOW).map(|r| r.0), Ok(group_key));
        // During a rotation the issuing key is found among several.
        let rotating = published(&f, vec![other, group_key]);
        assert_eq!(
            check(cert, &rotating, false, NOW).map(|r| r.0),
            Ok(group_key)
        );

        let moved = published(&f, vec![other]);
        let e = check(cert, &moved, false, NOW).unwrap_err();
        assert_eq!(e.label(), "issuer-not-published");
        assert!(e.to_string().contains(&KeyId::of(&group_key).to_string()));

        let mut revoked = good.clone();
        revoked.record.revoked.push(me);
        assert_eq!(
            check(cert, &revoked, false, NOW).unwrap_err(),
            Mismatch::Revoked(me)
        );

        let mut public = good.clone();
        public.record.protected = false;
        assert_eq!(
            check(cert, &public, false, NOW).unwrap_err().label(),
            "not-protected"
        );

        let mut expired = good.clone();
        expired.record.not_after = expired.record.not_before;
        assert_eq!(
            check(cert, &expired, false, NOW).unwrap_err().label(),
            "record-not-valid"
        );

        let mut absent = good.clone();
        absent.certificate = None;
        assert_eq!(check(cert, &absent, false, NOW).map(|r| r.0), Ok(group_key));
        assert_eq!(
            check(cert, &absent, true, NOW).unwrap_err(),
            Mismatch::CertificateWithdrawn(me)
        );

        // Member 2's certificate published where member 1's key looks: not ours.
        let mut differs = good.clone();
        differs.certificate = Some(
            CertRecord::new(
                igmp_ext::UnverifiedCertificate::decode(f.members[1].cert.as_bytes()).unwrap(),
            )
            .unwrap(),
        );
        assert_eq!(
            check(cert, &differs, true, NOW).unwrap_err(),
            Mismatch::CertificateDiffers(me)
        );
        assert!(check(cert, &differs, false, NOW).is_ok());

        // Outside its validity the certificate no longer verifies.
        let late = Timestamp(f.members[0].cert.body().not_after.0 + 1);
        let mut far = good.clone();
        far.record.not_after = Timestamp::from_secs(late.as_millis() / 1000 + 10);
        assert_eq!(
            check(cert, &far, false, late).unwrap_err().label(),
            "certificate-invalid"
        );
    }

    #[test]
    fn watch_leaves_one_ttl_after_a_mismatch_unless_it_clears() {
        let f = Fixture::new(1);
        let me = KeyId::of(&f.members[0].key.verifying_key());
        let good = published(&f, vec![f.group_key.verifying_key()]);
        let mut revoked = good.clone();
        revoked.record.revoked.push(me);
        let cert = UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).unwrap();
        let ttl = Duration::from_secs(300);
        let mut w = Watch::new(cert, false, Duration::from_secs(60), NOW, ttl);
        assert!(!w.stale(NOW.saturating_add(Duration::from_secs(360))));
        assert!(w.stale(NOW.saturating_add(Duration::from_secs(361))));
        assert_eq!(w.handle_fetch(NOW, Ok(good.clone())), None);
        assert_eq!(w.poll_leave(NOW), None);
        let leave_at = NOW.saturating_add(Duration::from_secs(300));
        assert_eq!(
            w.handle_fetch(NOW, Ok(revoked.clone())),
            Some(WatchEvent::Mismatch {
                reason: Mismatch::Revoked(me),
                leave_at
            })
        );
        // The same reason again changes nothing; a fetch failure is counted, nothing else.
        let later = NOW.saturating_add(Duration::from_secs(10));
        assert_eq!(w.handle_fetch(later, Ok(revoked.clone())), None);
        assert!(matches!(
            w.handle_fetch(later, Err(FetchError::Unreachable("timeout".into()))),
            Some(WatchEvent::FetchFailed(_))
        ));
        assert_eq!(w.refresh_failures(), 1);
        // The fetch at `later` validated (revoked, but an answer): trusted from there on.
        assert!(!w.stale(later.saturating_add(Duration::from_secs(360))));
        assert!(w.stale(later.saturating_add(Duration::from_secs(361))));
        assert_eq!(w.poll_leave(later), None);
        assert_eq!(w.poll_leave(leave_at), Some(&Mismatch::Revoked(me)));
        // Undone before the deadline: cleared, no leave.
        assert_eq!(w.handle_fetch(later, Ok(good)), Some(WatchEvent::Cleared));
        assert_eq!(w.poll_leave(leave_at), None);
        assert_eq!(w.problem(), None);
    }

    /// Issue 13 (item 13, the server side): a denial (NXDOMAIN, an empty answer, a certificate
    /// name that "does not exist") is not DNSSEC-proven, so anyone on the path can forge it. It
    /// counts as a failed fetch: the member never leaves or exits for it. A validated
    /// revocation still makes it leave.
    #[test]
    fn an_unproven_denial_never_makes_the_member_leave() {
        let f = Fixture::new(1);
        let me = KeyId::of(&f.members[0].key.verifying_key());
        let good = published(&f, vec![f.group_key.verifying_key()]);
        let cert = UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).unwrap();
        let ttl = Duration::from_secs(300);
        let mut w = Watch::new(cert, true, Duration::from_secs(60), NOW, ttl);
        let later = NOW.saturating_add(Duration::from_secs(10));
        assert!(matches!(
            w.handle_fetch(later, Err(FetchError::NoRecord)),
            Some(WatchEvent::FetchFailed(_))
        ));
        // Our certificate record denied while the group record validates.
        let mut no_cert = good.clone();
        no_cert.certificate = None;
        assert!(matches!(
            w.handle_fetch(later, Ok(no_cert)),
            Some(WatchEvent::FetchFailed(_))
        ));
        let far = later.saturating_add(Duration::from_secs(3600));
        assert_eq!(w.poll_leave(far), None);
        assert_eq!(w.problem(), None);
        assert_eq!(w.refresh_failures(), 2);
        // A validated revocation does make it leave, one TTL later.
        let mut revoked = good;
        revoked.record.revoked.push(me);
        assert!(matches!(
            w.handle_fetch(later, Ok(revoked)),
            Some(WatchEvent::Mismatch {
                reason: Mismatch::Revoked(_),
                ..
            })
        ));
        assert_eq!(
            w.poll_leave(later.saturating_add(ttl)),
            Some(&Mismatch::Revoked(me))
        );
    }

    /// Issue 17: the grace before a member leaves for a validated mismatch ran on the wall
    /// clock, so a step forward cut it short (and a step back stretched it).
    #[test]
    fn a_wall_clock_step_moves_no_leave_deadline() {
        let f = Fixture::new(1);
        let me = KeyId::of(&f.members[0].key.verifying_key());
        let cert = UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).expect("cert");
        let start = Clock::new(Instant::from_secs(1_000), NOW);
        let ttl = Duration::from_secs(300);
        let mut w = Watch::new(cert, false, Duration::from_secs(60), start, ttl);
        let mut revoked = published(&f, vec![f.group_key.verifying_key()]);
        revoked.record.revoked.push(me);
        assert!(w.handle_fetch(start, Ok(revoked)).is_some());
        // Ten seconds later by the monotonic clock, the wall clock stepped an hour ahead.
        let later = Clock::new(
            Instant::from_secs(1_010),
            NOW.saturating_add(Duration::from_secs(3_600)),
        );
        assert_eq!(w.poll_leave(later), None, "the grace is not over");
        assert!(!w.stale(later), "the last answer is still trusted");
        let over = Clock::new(Instant::from_secs(1_300), NOW);
        assert_eq!(w.poll_leave(over), Some(&Mismatch::Revoked(me)));
    }
}
