//! Operator certificates and operator-signed requests (issue 13, SPEC.md §9.7): the group key
//! certifies an operator key, which `manycastctl` holds and signs cluster-wide requests with
//! (move, rebalance, drain or resume another member). Members verify the certificate against
//! the group keys and the request against the certificate before acting.

use crate::cert::KeyId;
use crate::signature;
use crate::time::Timestamp;
use core::net::Ipv4Addr;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Domain separation: an operator certificate verifies as nothing else and nothing else (a
/// member certificate, a join, a control message) verifies as one.
pub const OPERATOR_CERT_CONTEXT: &[u8] = b"manycast operator certificate v1\0";
/// Domain separation for the operator's signature over one request.
pub const OPERATOR_REQUEST_CONTEXT: &[u8] = b"manycast operator request v1\0";
pub const OPERATOR_CERT_VERSION: u8 = 0x01;
/// version, operator key, issuer, not before, not after, control group, signature.
pub const OPERATOR_CERT_LEN: usize = 1 + 32 + 8 + 8 + 8 + 4 + 64;
const SIGNED_LEN: usize = OPERATOR_CERT_LEN - 64;

/// What an operator certificate grants: `operator_key` may sign requests for the cluster on
/// control group `cluster` between `not_before` and `not_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCertificateBody {
    pub operator_key: VerifyingKey,
    /// The group key that signs this certificate.
    pub issuer: KeyId,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// The control group (cluster id) the operator may act on.
    pub cluster: Ipv4Addr,
}

/// Why operator certificate bytes or a request signature were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    #[error("operator certificate malformed: {0}")]
    Malformed(&'static str),
    #[error("operator certificate version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("operator certificate is issued by key {found}, which is not a published group key")]
    UnknownIssuer { found: KeyId },
    #[error("operator certificate signature does not verify")]
    BadSignature,
    #[error("operator certificate is not valid at {now}")]
    NotValidNow { now: Timestamp },
    #[error("operator certificate is for control group {found}, not {expected}")]
    WrongCluster { expected: Ipv4Addr, found: Ipv4Addr },
    #[error("operator key {0} is revoked")]
    Revoked(KeyId),
    #[error("request signature does not verify")]
    BadRequestSignature,
}

/// A certificate whose group-key signature has been checked: only
/// [`OperatorCertificate::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCertificate {
    body: OperatorCertificateBody,
    bytes: Vec<u8>,
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

fn cert_message(signed: &[u8]) -> Vec<u8> {
    [OPERATOR_CERT_CONTEXT, signed].concat()
}

impl OperatorCertificateBody {
    fn encode_unsigned(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(OPERATOR_CERT_LEN);
        b.push(OPERATOR_CERT_VERSION);
        b.extend_from_slice(self.operator_key.as_bytes());
        b.extend_from_slice(&self.issuer.0);
        b.extend_from_slice(&self.not_before.as_millis().to_be_bytes());
        b.extend_from_slice(&self.not_after.as_millis().to_be_bytes());
        b.extend_from_slice(&self.cluster.octets());
        b
    }

    /// Signs the body with the group key (the admin tool; members never hold it).
    pub fn issue(&self, group_key: &SigningKey) -> Result<OperatorCertificate, OperatorError> {
        if self.issuer != KeyId::of(&group_key.verifying_key()) {
            return Err(OperatorError::UnknownIssuer { found: self.issuer });
        }
        let mut bytes = self.encode_unsigned();
        let sig = signature::sign(group_key, &cert_message(&bytes));
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(OperatorCertificate {
            body: self.clone(),
            bytes,
        })
    }

    /// Decodes certificate bytes without checking the signature (to show them, or to find the
    /// issuer). Exactly [`OPERATOR_CERT_LEN`] bytes.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Self, OperatorError> {
        if bytes.len() != OPERATOR_CERT_LEN {
            return Err(OperatorError::Malformed("wrong length"));
        }
        if bytes[0] != OPERATOR_CERT_VERSION {
            return Err(OperatorError::UnsupportedVersion(bytes[0]));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[1..33]);
        let operator_key = VerifyingKey::from_bytes(&key)
            .map_err(|_| OperatorError::Malformed("operator key is not a curve point"))?;
        let mut issuer = [0u8; 8];
        issuer.copy_from_slice(&bytes[33..41]);
        let c = &bytes[57..61];
        Ok(OperatorCertificateBody {
            operator_key,
            issuer: KeyId(issuer),
            not_before: Timestamp::from_millis(read_u64(&bytes[41..49])),
            not_after: Timestamp::from_millis(read_u64(&bytes[49..57])),
            cluster: Ipv4Addr::new(c[0], c[1], c[2], c[3]),
        })
    }
}

impl OperatorCertificate {
    /// Checks certificate bytes: well-formed, issued by one of `group_keys` (strict Ed25519),
    /// for `cluster`, valid at `now`, its key not among `revoked`.
    pub fn verify(
        bytes: &[u8],
        group_keys: &[VerifyingKey],
        cluster: Ipv4Addr,
        revoked: &[KeyId],
        now: Timestamp,
    ) -> Result<Self, OperatorError> {
        let body = OperatorCertificateBody::decode_unverified(bytes)?;
        let key = group_keys
            .iter()
            .find(|k| KeyId::of(k) == body.issuer)
            .ok_or(OperatorError::UnknownIssuer { found: body.issuer })?;
        let mut s = [0u8; 64];
        s.copy_from_slice(&bytes[SIGNED_LEN..]);
        let sig = Signature::from_bytes(&s);
        if !signature::verify(key, &cert_message(&bytes[..SIGNED_LEN]), &sig) {
            return Err(OperatorError::BadSignature);
        }
        if body.cluster != cluster {
            return Err(OperatorError::WrongCluster {
                expected: cluster,
                found: body.cluster,
            });
        }
        if now < body.not_before || now > body.not_after {
            return Err(OperatorError::NotValidNow { now });
        }
        let id = KeyId::of(&body.operator_key);
        if revoked.contains(&id) {
            return Err(OperatorError::Revoked(id));
        }
        Ok(OperatorCertificate {
            body,
            bytes: bytes.to_vec(),
        })
    }

    pub fn body(&self) -> &OperatorCertificateBody {
        &self.body
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.body.operator_key)
    }

    /// Checks the operator's signature over one request (see [`request_message`]).
    pub fn verify_request(
        &self,
        issued_at: Timestamp,
        request: &[u8],
        sig: &[u8],
    ) -> Result<(), OperatorError> {
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| OperatorError::BadRequestSignature)?;
        let m = request_message(self.body.cluster, issued_at, request);
        if signature::verify(&self.body.operator_key, &m, &Signature::from_bytes(&sig)) {
            Ok(())
        } else {
            Err(OperatorError::BadRequestSignature)
        }
    }
}

/// The bytes an operator signs for one request: context, control group, the time it was
/// issued (ms; receivers refuse it outside their timeliness window and not newer than the last
/// one from the same operator key), and the request's encoding.
pub fn request_message(cluster: Ipv4Addr, issued_at: Timestamp, request: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(OPERATOR_REQUEST_CONTEXT.len() + 12 + request.len());
    m.extend_from_slice(OPERATOR_REQUEST_CONTEXT);
    m.extend_from_slice(&cluster.octets());
    m.extend_from_slice(&issued_at.as_millis().to_be_bytes());
    m.extend_from_slice(request);
    m
}

/// The operator's signature over one request (`manycastctl`).
pub fn sign_request(
    key: &SigningKey,
    cluster: Ipv4Addr,
    issued_at: Timestamp,
    request: &[u8],
) -> [u8; 64] {
    signature::sign(key, &request_message(cluster, issued_at, request)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

    fn body(group: &SigningKey, operator: &SigningKey) -> OperatorCertificateBody {
        OperatorCertificateBody {
            operator_key: operator.verifying_key(),
            issuer: KeyId::of(&group.verifying_key()),
            not_before: Timestamp::from_secs(1_767_225_600),
            not_after: Timestamp::from_secs(1_830_297_600),
            cluster: Ipv4Addr::new(239, 1, 1, 1),
        }
    }

    #[test]
    fn issue_verify_and_refusals() {
        let group = SigningKey::from_bytes(&[1; 32]);
        let op = SigningKey::from_bytes(&[2; 32]);
        let cert = body(&group, &op).issue(&group).expect("issuer matches");
        let bytes = cert.as_bytes().to_vec();
        assert_eq!(bytes.len(), OPERATOR_CERT_LEN);
        let keys = [group.verifying_key()];
        let cluster = Ipv4Addr::new(239, 1, 1, 1);
        let ok = OperatorCertificate::verify(&bytes, &keys, cluster, &[], NOW).expect("valid");
        assert_eq!(ok.body(), cert.body());
        let other = [SigningKey::from_bytes(&[3; 32]).verifying_key()];
        assert!(matches!(
            OperatorCertificate::verify(&bytes, &other, cluster, &[], NOW),
            Err(OperatorError::UnknownIssuer { .. })
        ));
        let wrong = Ipv4Addr::new(239, 1, 1, 2);
        assert!(matches!(
            OperatorCertificate::verify(&bytes, &keys, wrong, &[], NOW),
            Err(OperatorError::WrongCluster { .. })
        ));
        let revoked = [KeyId::of(&op.verifying_key())];
        assert!(matches!(
            OperatorCertificate::verify(&bytes, &keys, cluster, &revoked, NOW),
            Err(OperatorError::Revoked(_))
        ));
        let late = Timestamp::from_secs(1_830_297_601);
        assert!(OperatorCertificate::verify(&bytes, &keys, cluster, &[], late).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                OperatorCertificate::verify(&b, &keys, cluster, &[], NOW).is_err(),
                "{i}"
            );
        }
        for n in 0..bytes.len() {
            assert!(OperatorCertificate::verify(&bytes[..n], &keys, cluster, &[], NOW).is_err());
        }
        // A member certificate's signature context cannot be replayed as an operator's.
        assert_ne!(OPERATOR_CERT_CONTEXT, crate::cert::CERT_SIGNING_CONTEXT);
    }

    #[test]
    fn request_signatures_bind_cluster_time_and_request() {
        let group = SigningKey::from_bytes(&[1; 32]);
        let op = SigningKey::from_bytes(&[2; 32]);
        let cert = body(&group, &op).issue(&group).expect("issuer matches");
        let cluster = cert.body().cluster;
        let sig = sign_request(&op, cluster, NOW, b"drain 3");
        assert!(cert.verify_request(NOW, b"drain 3", &sig).is_ok());
        assert!(cert.verify_request(NOW, b"drain 2", &sig).is_err());
        assert!(cert
            .verify_request(Timestamp(NOW.0 + 1), b"drain 3", &sig)
            .is_err());
        assert!(cert.verify_request(NOW, b"drain 3", &sig[..63]).is_err());
        let member = SigningKey::from_bytes(&[4; 32]);
        let forged = sign_request(&member, cluster, NOW, b"drain 3");
        assert!(cert.verify_request(NOW, b"drain 3", &forged).is_err());
    }
}
