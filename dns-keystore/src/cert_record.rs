//! A member certificate as the keystore publishes it (SPEC.md §8.7): one TXT record at
//! `<member key id>.m.<zone>` in the same tag-list syntax as the group record,
//! `v=MCC1; c=<base64 of the certificate bytes of SPEC.md §4>`. Sans-IO.
//!
//! Parsing checks that the bytes are a well-formed certificate, never its signature: the group
//! key that signs it lives in another record, and a DNSSEC-valid answer only proves who
//! published the bytes. The value stays an [`UnverifiedCertificate`] until the caller verifies it.

use crate::record::{tag_list, txt_chunks, txt_text, RecordError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use igmp_ext::{KeyId, UnverifiedCertificate};

/// The `v=` value of this format; the first tag of every member certificate record.
pub const CERT_RECORD_VERSION: &str = "MCC1";
/// Largest certificate published: 600 bytes are 800 base64 characters, so the record text
/// stays under [`crate::record::MAX_RECORD_LEN`] and the answer with its RRSIG under 1232 bytes.
/// A certificate with one group holds 67 slices within it.
pub const MAX_CERT_LEN: usize = 600;

/// A published member certificate: well-formed, signature not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    cert: UnverifiedCertificate,
}

fn bad(tag: &'static str, why: &'static str) -> RecordError {
    RecordError::BadValue { tag, why }
}

impl CertRecord {
    /// Wraps a certificate for publishing; refuses one too large for a DNS answer.
    pub fn new(cert: UnverifiedCertificate) -> Result<Self, RecordError> {
        if cert.as_bytes().len() > MAX_CERT_LEN {
            return Err(bad("c", "certificate is longer than 600 bytes"));
        }
        Ok(CertRecord { cert })
    }

    /// The certificate, still to be verified against the group key.
    pub fn certificate(&self) -> &UnverifiedCertificate {
        &self.cert
    }

    pub fn into_certificate(self) -> UnverifiedCertificate {
        self.cert
    }

    /// The key id of the certified member key: the record's name label.
    pub fn member_key_id(&self) -> KeyId {
        KeyId::of(&self.cert.unverified_body().member_key)
    }

    /// `v=MCC1; c=<base64>`.
    pub fn to_text(&self) -> String {
        format!(
            "v={CERT_RECORD_VERSION}; c={}",
            BASE64.encode(self.cert.as_bytes())
        )
    }

    /// The TXT character-strings to publish (at most 255 bytes each).
    pub fn to_txt_strings(&self) -> Vec<String> {
        txt_chunks(&self.to_text())
    }

    /// Parses TXT character-strings as received (concatenated first). Never panics.
    pub fn parse_txt<S: AsRef<[u8]>>(strings: &[S]) -> Result<Self, RecordError> {
        Self::parse(&txt_text(strings)?)
    }

    /// Parses record text: the tag-list rules of SPEC.md §8.1, `v=MCC1` first, `c=` required
    /// (folding whitespace inside it allowed), unknown tags ignored. Never panics.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let tags = tag_list(text)?;
        match tags.first() {
            Some(("v", CERT_RECORD_VERSION)) => {}
            _ => return Err(bad("v", "a member certificate record starts with v=MCC1")),
        }
        let c = tags
            .iter()
            .find(|(n, _)| *n == "c")
            .map(|(_, v)| *v)
            .ok_or(RecordError::MissingTag("c"))?;
        let b64: String = c.chars().filter(|ch| !ch.is_ascii_whitespace()).collect();
        // Bound before decoding so the decoder never sees more than a certificate's worth.
        if b64.len() > MAX_CERT_LEN.div_ceil(3) * 4 {
            return Err(bad("c", "certificate is longer than 600 bytes"));
        }
        let bytes = BASE64
            .decode(b64.as_bytes())
            .map_err(|_| bad("c", "not base64"))?;
        let cert = UnverifiedCertificate::decode(&bytes).map_err(RecordError::Certificate)?;
        Self::new(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::fixtures::{Fixture, NOW};

    fn sample() -> (Fixture, CertRecord) {
        let f = Fixture::new(1);
        let cert = UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).unwrap();
        let r = CertRecord::new(cert).unwrap();
        (f, r)
    }

    #[test]
    fn text_vector_both_ways_and_verifies_after_parsing() {
        let (f, r) = sample();
        let text = r.to_text();
        assert_eq!(
            text,
            format!("v=MCC1; c={}", BASE64.encode(f.members[0].cert.as_bytes()))
        );
        let back = CertRecord::parse(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.member_key_id(),
            KeyId::of(&f.members[0].key.verifying_key())
        );
        // Parsing does not verify; the caller does, with the group key.
        let cert = back
            .into_certificate()
            .verify(&f.group_key.verifying_key(), NOW)
            .unwrap();
        assert_eq!(&cert, &f.members[0].cert);
        // Split into several character-strings and with folding whitespace and unknown tags.
        let strings = r.to_txt_strings();
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(CertRecord::parse_txt(&strings).unwrap(), r);
        let folded = text
            .replacen("c=", "c= ", 1)
            .replacen("v=MCC1;", "v=MCC1; z=1;", 1);
        assert_eq!(CertRecord::parse(&folded).unwrap(), r);
    }

    /// A router certificate (version 3, SPEC.md §4.3) publishes and parses like a member's,
    /// its site intact.
    #[test]
    fn a_router_certificate_record_keeps_its_site() {
        use igmp_ext::SiteId;
        let f = Fixture::routers(&[SiteId(4)]);
        let cert = UnverifiedCertificate::decode(f.members[0].cert.as_bytes()).unwrap();
        let text = CertRecord::new(cert).unwrap().to_text();
        let back = CertRecord::parse(&text).unwrap().into_certificate();
        assert_eq!(back.unverified_site(), Some(SiteId(4)));
        let cert = back.verify(&f.group_key.verifying_key(), NOW).unwrap();
        assert_eq!(cert.site(), Some(SiteId(4)));
    }

    #[test]
    fn refuses_bad_records_with_the_tag_at_fault() {
        let (_, r) = sample();
        let good = r.to_text();
        let b64 = good.trim_start_matches("v=MCC1; c=").to_owned();
        let mut truncated = b64.clone();
        truncated.truncate(b64.len() - 8);
        let cases: Vec<(String, &str)> = vec![
            (good.replacen("MCC1", "MC1", 1), "v="),
            ("v=MCC1".to_owned(), "c="),
            (format!("v=MCC1; c={truncated}"), "c="),
            ("v=MCC1; c=!!!!".to_owned(), "base64"),
            (format!("v=MCC1; c={}", "A".repeat(804)), "600"),
            (format!("{good}; c=AAAA"), "twice"),
            (format!("c={b64}; v=MCC1"), "v="),
        ];
        for (text, expect) in cases {
            let err = CertRecord::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = CertRecord::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_base64(s in "[A-Za-z0-9+/=]{0,900}") {
            let _ = CertRecord::parse(&format!("v=MCC1; c={s}"));
        }
    }
}
