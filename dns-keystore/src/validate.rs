//! DNSSEC validation of keystore answers against a configured trust anchor (RFC 4035 §5), for
//! the one zone the keystore serves: anchor → DNSKEY RRset → the record's RRset. Sans-IO: the
//! caller passes the answer records and `now`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, RRSIG};
use hickory_proto::dnssec::{Algorithm, PublicKey as _, Verifier as _};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The zone's key as the operator configured it: one DNSKEY (flags, algorithm 15, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    pub zone: Name,
    pub flags: u16,
    pub public_key: Vec<u8>,
}

/// Why an answer was not accepted. `Bogus` means the bytes do not prove the data: tampering,
/// a wrong trust anchor, or expired signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("trust anchor: {0}")]
    Anchor(&'static str),
    #[error("DNSSEC bogus: {0}")]
    Bogus(&'static str),
}

impl TrustAnchor {
    /// Reads BIND's `trust-anchors { "zone." static-key 257 3 15 "base64"; };` (the file the
    /// daemon writes and `delv -a` reads). Only algorithm 15 (Ed25519, RFC 8080) is accepted.
    pub fn parse(text: &str) -> Result<TrustAnchor, ValidationError> {
        let body = text
            .trim()
            .strip_prefix("trust-anchors")
            .and_then(|s| s.trim().strip_prefix('{'))
            .and_then(|s| s.trim_end().strip_suffix(';'))
            .and_then(|s| s.trim_end().strip_suffix('}'))
            .ok_or(ValidationError::Anchor(
                "not a trust-anchors { ... }; statement",
            ))?;
        let entry = body.trim().trim_end_matches(';');
        let fields: Vec<&str> = entry.split_whitespace().collect();
        let [zone, kind, flags, proto, alg, key @ ..] = fields.as_slice() else {
            return Err(ValidationError::Anchor(
                "expected: \"zone\" static-key flags 3 15 \"key\"",
            ));
        };
        if *kind != "static-key" && *kind != "initial-key" {
            return Err(ValidationError::Anchor(
                "only static-key anchors are supported",
            ));
        }
        if *proto != "3" || *alg != "15" {
            return Err(ValidationError::Anchor(
                "only protocol 3, algorithm 15 (Ed25519)",
            ));
        }
        let flags: u16 = flags
            .parse()
            .map_err(|_| ValidationError::Anchor("flags are not a number"))?;
        let zone = Name::from_ascii(zone.trim_matches('"'))
            .map_err(|_| ValidationError::Anchor("zone is not a DNS name"))?
            .to_lowercase();
        let b64: String = key.concat().chars().filter(|c| *c != '"').collect();
        let public_key = BASE64
            .decode(b64.as_bytes())
            .map_err(|_| ValidationError::Anchor("key is not base64"))?;
        if public_key.len() != 32 {
            return Err(ValidationError::Anchor("an Ed25519 key is 32 bytes"));
        }
        let mut zone = zone;
        zone.set_fqdn(true);
        Ok(TrustAnchor {
            zone,
            flags,
            public_key,
        })
    }

    fn matches(&self, key: &DNSKEY) -> bool {
        key.flags() == self.flags
            && key.public_key().algorithm() == Algorithm::ED25519
            && key.public_key().public_bytes() == self.public_key.as_slice()
    }
}

/// Records proven by a signature chain from the trust anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub records: Vec<Record>,
    /// The earliest signature expiration in the chain (seconds since the epoch).
    pub expires: u64,
    /// The smallest TTL of the proven RRset.
    pub ttl: u32,
    /// When the RRset's signature was made (its RRSIG inception, seconds since the epoch): the
    /// zone is re-signed at every update, so a later answer never carries an earlier one.
    pub inception: u64,
}

fn rrsigs<'a>(
    answers: &'a [Record],
    name: &'a Name,
    covered: RecordType,
) -> impl Iterator<Item = &'a RRSIG> {
    answers.iter().filter_map(move |r| match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(sig))
            if &r.name.to_lowercase() == name && sig.input().type_covered == covered =>
        {
            Some(sig)
        }
        _ => None,
    })
}

/// Clock skew allowed before an RRSIG's inception: hickory stamps inception with the signing
/// second, so a router whose clock is a little behind the server's would otherwise refuse
/// fresh signatures.
pub const INCEPTION_SKEW_SECS: u32 = 300;

/// Time is compared in RFC 1982 serial arithmetic as RFC 4034 §3.1.5 asks.
fn in_window(sig: &RRSIG, now: u64) -> bool {
    let now = now as u32;
    let inception = sig
        .input()
        .sig_inception
        .get()
        .wrapping_sub(INCEPTION_SKEW_SECS);
    let expiration = sig.input().sig_expiration.get();
    now.wrapping_sub(inception) as i32 >= 0 && expiration.wrapping_sub(now) as i32 >= 0
}

/// Checks `rrset` (the records of `name`/`rtype` in `answers`) against the DNSKEY RRset in
/// `dnskey_answers`, which must be signed by the trust anchor's key.
pub fn validate(
    anchor: &TrustAnchor,
    dnskey_answers: &[Record],
    answers: &[Record],
    name: &Name,
    rtype: RecordType,
    now: u64,
) -> Result<Validated, ValidationError> {
    let zone = &anchor.zone;
    let name = name.to_lowercase();
    if !zone.zone_of(&name) {
        return Err(ValidationError::Bogus("name is outside the anchored zone"));
    }
    let dnskey_set: Vec<&Record> = dnskey_answers
        .iter()
        .filter(|r| &r.name.to_lowercase() == zone && r.record_type() == RecordType::DNSKEY)
        .collect();
    let keys: Vec<&DNSKEY> = dnskey_set
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k),
            _ => None,
        })
        .collect();
    let anchor_key = keys
        .iter()
        .find(|k| anchor.matches(k))
        .ok_or(ValidationError::Bogus("no DNSKEY matches the trust anchor"))?;
    let anchor_tag = anchor_key
        .calculate_key_tag()
        .map_err(|_| ValidationError::Bogus("DNSKEY cannot be encoded"))?;
    let mut expires = u64::MAX;
    let dnskey_sig = rrsigs(dnskey_answers, zone, RecordType::DNSKEY)
        .filter(|s| {
            s.input().key_tag == anchor_tag && &s.input().signer_name.to_lowercase() == zone
        })
        .find(|s| {
            in_window(s, now)
                && anchor_key
                    .verify_rrsig(zone, DNSClass::IN, s, dnskey_set.iter().copied())
                    .is_ok()
        })
        .ok_or(ValidationError::Bogus(
            "DNSKEY RRset is not signed by the trust anchor",
        ))?;
    expires = expires.min(u64::from(dnskey_sig.input().sig_expiration.get()));

    let rrset: Vec<&Record> = answers
        .iter()
        .filter(|r| r.name.to_lowercase() == name && r.record_type() == rtype)
        .collect();
    if rrset.is_empty() {
        return Err(ValidationError::Bogus("the answer holds no such RRset"));
    }
    let sig = rrsigs(answers, &name, rtype)
        .filter(|s| &s.input().signer_name.to_lowercase() == zone)
        .find(|s| {
            in_window(s, now)
                && keys.iter().any(|k| {
                    k.zone_key()
                        && k.calculate_key_tag().ok() == Some(s.input().key_tag)
                        && k.verify_rrsig(&name, DNSClass::IN, s, rrset.iter().copied())
                            .is_ok()
                })
        })
        .ok_or(ValidationError::Bogus(
            "no valid RRSIG by a zone key covers the RRset",
        ))?;
    expires = expires.min(u64::from(sig.input().sig_expiration.get()));
    let ttl = rrset
        .iter()
        .map(|r| r.ttl)
        .min()
        .unwrap_or(0)
        .min(sig.input().original_ttl);
    Ok(Validated {
        records: rrset.into_iter().cloned().collect(),
        expires,
        ttl,
        inception: u64::from(sig.input().sig_inception.get()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_parse() {
        let a = TrustAnchor::parse(
            "trust-anchors { \"groups.manycast.test.\" static-key 257 3 15 \"tW+/GZgvMwvtnWQ8vHaXf2IoxRkYOGOxKClpFU4agRU=\"; };\n",
        )
        .unwrap();
        assert_eq!(a.zone.to_string(), "groups.manycast.test.");
        assert_eq!(a.flags, 257);
        assert_eq!(a.public_key.len(), 32);
        for bad in [
            "",
            "trust-anchors { };",
            "trust-anchors { \"z.\" static-key 257 3 8 \"AAAA\"; };",
            "trust-anchors { \"z.\" static-key 257 3 15 \"AAAA\"; };",
            "trusted-keys { \"z.\" 257 3 15 \"AAAA\"; };",
        ] {
            assert!(TrustAnchor::parse(bad).is_err(), "{bad}");
        }
    }
}
