//! The group record (patent Fig 4) as the keystore publishes it: one TXT record in DKIM-style
//! `tag=value;` syntax (RFC 6376 §3.2), the key written as in RFC 8463 (`k=ed25519; p=<base64 of
//! the raw 32-byte key>`). Sans-IO: text in, checked record out, and back. SPEC.md §8.
//!
//! A record is of one address family: its group (`g=`) and VIP (`s=`) are both IPv4 (the
//! format since issue 3, unchanged byte for byte) or both IPv6 (issue 15). [`AnyGroupRecord`]
//! parses either, for readers that do not know the family before they read the record.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::verify::{GroupKey, GroupKeys};
use igmp_ext::{KeyId, Timestamp};

/// The `v=` value of this format; it is the first tag of every record.
pub const VERSION: &str = "MC1";
/// Longest record text accepted or emitted, so that an answer with its RRSIG fits one UDP
/// datagram of 1232 bytes (the DNS flag day 2020 EDNS size).
pub const MAX_RECORD_LEN: usize = 1024;
/// Most group keys in one record (more than one only while a key is rotated).
pub const MAX_KEYS: usize = 4;
/// Most revoked member key ids in one record; older revocations expire with the certificates.
pub const MAX_REVOKED: usize = 32;
/// Longest owner text.
pub const MAX_OWNER_LEN: usize = 64;
/// Longest TXT character-string (RFC 1035 §3.3.14); longer records are split into several,
/// which readers concatenate (as for DKIM, RFC 6376 §3.6.2.2).
pub const TXT_CHUNK: usize = 255;

mod sealed {
    pub trait Sealed {}
    impl Sealed for core::net::Ipv4Addr {}
    impl Sealed for core::net::Ipv6Addr {}
}

/// The address family of a group record: [`Ipv4Addr`] (`g=232.1.1.1`, A records) or
/// [`Ipv6Addr`] (`g=ff3e::8000:1`, AAAA records). Sealed: these two only.
pub trait GroupFamily:
    sealed::Sealed
    + Copy
    + Eq
    + core::fmt::Debug
    + core::fmt::Display
    + core::str::FromStr
    + Into<IpAddr>
{
    /// The parse error of `g=` and `s=` when the text is not an address of this family.
    const NOT_THIS_FAMILY: &'static str;
    /// Why `self` cannot be a group address, if it cannot: it must be multicast.
    fn group_fault(&self) -> Option<&'static str>;
    /// Why `self` cannot be a service VIP, if it cannot: it must be a unicast address a client
    /// can reach through the router.
    fn vip_fault(&self) -> Option<&'static str>;
}

impl GroupFamily for Ipv4Addr {
    const NOT_THIS_FAMILY: &'static str = "not an IPv4 address";
    fn group_fault(&self) -> Option<&'static str> {
        (!self.is_multicast()).then_some("not a multicast address")
    }
    fn vip_fault(&self) -> Option<&'static str> {
        (self.is_multicast() || self.is_unspecified() || self.is_broadcast())
            .then_some("not a unicast address")
    }
}

impl GroupFamily for Ipv6Addr {
    const NOT_THIS_FAMILY: &'static str = "not an IPv6 address";
    fn group_fault(&self) -> Option<&'static str> {
        (!self.is_multicast()).then_some("not a multicast address")
    }
    fn vip_fault(&self) -> Option<&'static str> {
        if self.is_multicast() || self.is_unspecified() || self.is_loopback() {
            return Some("not a unicast address");
        }
        if self.is_unicast_link_local() {
            return Some("a link-local address is no VIP (it is not routed)");
        }
        if self.to_ipv4_mapped().is_some() {
            return Some("an IPv4-mapped address: publish an IPv4 record");
        }
        None
    }
}

/// A group's published record: Fig 4's address, name, owner, key and public/private flag, plus
/// what the verifier needs (key ids, validity, revocations, the VIP where one is used).
///
/// `A` is the address family of `g=` and `s=`; `GroupRecord` alone is the IPv4 record,
/// [`GroupRecord6`] the IPv6 one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord<A: GroupFamily = Ipv4Addr> {
    /// `g=`: the multicast group address.
    pub group: A,
    /// `n=`: the service label; the record is also published at `<name>.<zone>`.
    pub name: String,
    /// `o=`: who administers the group (free text: printable ASCII, no `;`, no spaces).
    pub owner: String,
    /// `f=protected` or `f=public`: public groups are accepted as plain IGMPv3.
    pub protected: bool,
    /// `k=ed25519; p=`: the group keys (comma-separated base64), newest last.
    pub keys: Vec<VerifyingKey>,
    /// `t=`: not valid before (seconds since the Unix epoch).
    pub not_before: Timestamp,
    /// `x=`: not valid after (seconds since the Unix epoch).
    pub not_after: Timestamp,
    /// `r=`: revoked member key ids (16 hex digits each, comma-separated).
    pub revoked: Vec<KeyId>,
    /// `s=`: the unicast service VIP bound to the group, in VIP mode.
    pub vip: Option<A>,
}

/// The record of an IPv6 group (`g=ff3e::...`, `s=` an IPv6 VIP).
pub type GroupRecord6 = GroupRecord<Ipv6Addr>;

/// A record of either family, as read from a name whose family the reader does not know (a
/// service name). The family is `g=`'s: an address with a `:` is IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyGroupRecord {
    V4(GroupRecord),
    V6(GroupRecord6),
}

/// Why record text was refused. Each names the tag at fault: the publisher wrote a bad record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record is {0} bytes, more than {MAX_RECORD_LEN}")]
    TooLong(usize),
    #[error("record syntax: {0}")]
    Syntax(&'static str),
    #[error("record does not start with v={VERSION}")]
    UnsupportedVersion,
    #[error("record tag {0}= appears twice")]
    DuplicateTag(String),
    #[error("record lacks the {0}= tag")]
    MissingTag(&'static str),
    #[error("record tag {tag}=: {why}")]
    BadValue {
        tag: &'static str,
        why: &'static str,
    },
    #[error("record key type is not ed25519")]
    UnsupportedKeyType,
    /// A member certificate record whose `c=` does not hold certificate bytes (SPEC.md §4).
    #[error("record tag c=: {0}")]
    Certificate(igmp_ext::cert::CertificateError),
}

fn bad(tag: &'static str, why: &'static str) -> RecordError {
    RecordError::BadValue { tag, why }
}

/// True for a DNS label we publish under: 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`.
pub fn is_service_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_owner_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_OWNER_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b'=' && b != b',')
}

impl<A: GroupFamily> GroupRecord<A> {
    /// Checks what a publisher controls: addresses, label, owner, key count, revocations, validity.
    pub fn check(&self) -> Result<(), RecordError> {
        // The parser refuses these too; checking them here keeps the emitter from writing text
        // that every reader (and the server's update screening) would refuse.
        if let Some(why) = self.group.group_fault() {
            return Err(bad("g", why));
        }
        if let Some(why) = self.vip.as_ref().and_then(GroupFamily::vip_fault) {
            return Err(bad("s", why));
        }
        if !is_service_label(&self.name) {
            return Err(bad("n", "not a DNS label of a-z, 0-9 and -"));
        }
        if !is_owner_text(&self.owner) {
            return Err(bad("o", "not 1 to 64 printable characters without ; = ,"));
        }
        if self.protected && self.keys.is_empty() {
            return Err(RecordError::MissingTag("p"));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(bad("p", "more than 4 keys"));
        }
        if self.keys.iter().any(VerifyingKey::is_weak) {
            return Err(bad("p", "weak (small-order) key"));
        }
        if self.revoked.len() > MAX_REVOKED {
            return Err(bad("r", "more than 32 revoked keys"));
        }
        if self.not_after < self.not_before {
            return Err(bad("x", "expires before it starts"));
        }
        if self.not_before.as_millis() % 1000 != 0 || self.not_after.as_millis() % 1000 != 0 {
            return Err(bad("t", "validity is in whole seconds"));
        }
        let len = self.text_unchecked().len();
        if len > MAX_RECORD_LEN {
            return Err(RecordError::TooLong(len));
        }
        Ok(())
    }

    /// The record text, for example
    /// `v=MC1; g=232.1.1.1; n=web; o=ops@example.org; f=protected; k=ed25519; p=...; i=...; t=...; x=...`.
    pub fn to_text(&self) -> Result<String, RecordError> {
        self.check()?;
        Ok(self.text_unchecked())
    }

    fn text_unchecked(&self) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "v={VERSION}; g={}; n={}; o={}; f={}",
            self.group,
            self.name,
            self.owner,
            if self.protected {
                "protected"
            } else {
                "public"
            }
        );
        if !self.keys.is_empty() {
            let keys: Vec<String> = self
                .keys
                .iter()
                .map(|k| BASE64.encode(k.as_bytes()))
                .collect();
            let ids: Vec<String> = self.keys.iter().map(|k| KeyId::of(k).to_string()).collect();
            let _ = write!(s, "; k=ed25519; p={}; i={}", keys.join(","), ids.join(","));
        }
        let _ = write!(
            s,
            "; t={}; x={}",
            self.not_before.as_millis() / 1000,
            self.not_after.as_millis() / 1000
        );
        if !self.revoked.is_empty() {
            let ids: Vec<String> = self.revoked.iter().map(KeyId::to_string).collect();
            let _ = write!(s, "; r={}", ids.join(","));
        }
        if let Some(vip) = self.vip {
            let _ = write!(s, "; s={vip}");
        }
        s
    }

    /// The TXT character-strings to publish: the text cut into pieces of at most 255 bytes.
    pub fn to_txt_strings(&self) -> Result<Vec<String>, RecordError> {
        Ok(txt_chunks(&self.to_text()?))
    }

    /// True when `now` lies within [t, x].
    pub fn valid_at(&self, now: Timestamp) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The record from its tag-specs, `v=` checked first. Never panics.
    fn from_tags(tags: &[(&str, &str)]) -> Result<Self, RecordError> {
        match tags.first() {
            Some(("v", VERSION)) => {}
            _ => return Err(RecordError::UnsupportedVersion),
        }
        let get = |tag: &str| tags.iter().find(|(n, _)| *n == tag).map(|(_, v)| *v);
        let need = |tag: &'static str| get(tag).ok_or(RecordError::MissingTag(tag));

        let group = need("g")?
            .parse::<A>()
            .map_err(|_| bad("g", A::NOT_THIS_FAMILY))?;
        if let Some(why) = group.group_fault() {
            return Err(bad("g", why));
        }
        let name = need("n")?.to_owned();
        let owner = need("o")?.to_owned();
        let protected = match need("f")? {
            "protected" => true,
            "public" => false,
            _ => return Err(bad("f", "neither protected nor public")),
        };
        let keys = match get("p") {
            None => Vec::new(),
            Some(p) => {
                if get("k").unwrap_or("ed25519") != "ed25519" {
                    return Err(RecordError::UnsupportedKeyType);
                }
                parse_keys(p)?
            }
        };
        if let Some(ids) = get("i") {
            let ids = parse_key_ids("i", ids)?;
            let expected: Vec<KeyId> = keys.iter().map(KeyId::of).collect();
            if ids != expected {
                return Err(bad("i", "key ids do not match the keys in p="));
            }
        }
        let not_before = Timestamp::from_secs(parse_secs("t", need("t")?)?);
        let not_after = Timestamp::from_secs(parse_secs("x", need("x")?)?);
        let revoked = match get("r") {
            None => Vec::new(),
            Some(r) => parse_key_ids("r", r)?,
        };
        let vip = match get("s") {
            None => None,
            Some(s) => {
                let vip = s.parse::<A>().map_err(|_| bad("s", A::NOT_THIS_FAMILY))?;
                if let Some(why) = vip.vip_fault() {
                    return Err(bad("s", why));
                }
                Some(vip)
            }
        };
        let record = GroupRecord {
            group,
            name,
            owner,
            protected,
            keys,
            not_before,
            not_after,
            revoked,
            vip,
        };
        record.check()?;
        Ok(record)
    }
}

impl GroupRecord<Ipv4Addr> {
    /// Parses TXT character-strings as received (concatenated first). Never panics.
    pub fn parse_txt<S: AsRef<[u8]>>(strings: &[S]) -> Result<Self, RecordError> {
        Self::parse(&txt_text(strings)?)
    }

    /// Parses the text of an IPv4 record (RFC 6376 §3.2 tag-list). Never panics.
    ///
    /// Whitespace around tags and values is ignored, a trailing `;` is allowed, tag names are
    /// case-sensitive, a repeated tag is an error and an unknown tag is skipped, so that later
    /// versions can add tags. `v=MC1` must come first. An IPv6 record is refused (`g=`: not an
    /// IPv4 address); [`AnyGroupRecord::parse`] takes both.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        Self::from_tags(&tag_list(text)?)
    }

    /// What the verifier takes: the keys and revocations.
    pub fn to_group_keys(&self) -> GroupKeys {
        GroupKeys {
            group: self.group,
            keys: self.keys.iter().copied().map(GroupKey::new).collect(),
            revoked_members: self.revoked.clone(),
        }
    }
}

impl GroupRecord<Ipv6Addr> {
    /// Parses TXT character-strings of an IPv6 record. Never panics.
    pub fn parse_txt_ipv6<S: AsRef<[u8]>>(strings: &[S]) -> Result<Self, RecordError> {
        Self::parse_ipv6(&txt_text(strings)?)
    }

    /// Parses the text of an IPv6 record, by the rules of [`GroupRecord::parse`]. Never panics.
    pub fn parse_ipv6(text: &str) -> Result<Self, RecordError> {
        Self::from_tags(&tag_list(text)?)
    }

    /// What the verifier's MLDv2 path takes: the keys and revocations.
    pub fn to_group_keys6(&self) -> igmp_ext::mld_verifier::GroupKeys6 {
        igmp_ext::mld_verifier::GroupKeys6 {
            group: self.group,
            keys: self.keys.iter().copied().map(GroupKey::new).collect(),
            revoked_members: self.revoked.clone(),
        }
    }
}

impl AnyGroupRecord {
    /// Parses TXT character-strings as received (concatenated first). Never panics.
    pub fn parse_txt<S: AsRef<[u8]>>(strings: &[S]) -> Result<Self, RecordError> {
        Self::parse(&txt_text(strings)?)
    }

    /// Parses a record of either family: IPv6 when `g=` holds a `:`, else IPv4. Never panics.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let tags = tag_list(text)?;
        let ipv6 = tags
            .iter()
            .find(|(n, _)| *n == "g")
            .is_some_and(|(_, v)| v.contains(':'));
        if ipv6 {
            GroupRecord6::from_tags(&tags).map(AnyGroupRecord::V6)
        } else {
            GroupRecord::from_tags(&tags).map(AnyGroupRecord::V4)
        }
    }

    /// `g=`.
    pub fn group(&self) -> IpAddr {
        match self {
            AnyGroupRecord::V4(r) => r.group.into(),
            AnyGroupRecord::V6(r) => r.group.into(),
        }
    }

    /// `s=`.
    pub fn vip(&self) -> Option<IpAddr> {
        match self {
            AnyGroupRecord::V4(r) => r.vip.map(Into::into),
            AnyGroupRecord::V6(r) => r.vip.map(Into::into),
        }
    }

    /// `n=`.
    pub fn name(&self) -> &str {
        match self {
            AnyGroupRecord::V4(r) => &r.name,
            AnyGroupRecord::V6(r) => &r.name,
        }
    }

    /// The record text (see [`GroupRecord::to_text`]).
    pub fn to_text(&self) -> Result<String, RecordError> {
        match self {
            AnyGroupRecord::V4(r) => r.to_text(),
            AnyGroupRecord::V6(r) => r.to_text(),
        }
    }

    /// True when `now` lies within [t, x].
    pub fn valid_at(&self, now: Timestamp) -> bool {
        match self {
            AnyGroupRecord::V4(r) => r.valid_at(now),
            AnyGroupRecord::V6(r) => r.valid_at(now),
        }
    }
}

impl From<GroupRecord> for AnyGroupRecord {
    fn from(r: GroupRecord) -> Self {
        AnyGroupRecord::V4(r)
    }
}

impl From<GroupRecord6> for AnyGroupRecord {
    fn from(r: GroupRecord6) -> Self {
        AnyGroupRecord::V6(r)
    }
}

/// Splits record text into its tag-specs (RFC 6376 §3.2 tag-list), shared by the group record
/// and the member certificate record (SPEC.md §8.1, §8.7). Never panics.
///
/// Whitespace around tags and values is ignored, a trailing `;` is allowed, tag names are
/// case-sensitive and a repeated tag is an error. The caller checks `v=` and its own tags.
pub(crate) fn tag_list(text: &str) -> Result<Vec<(&str, &str)>, RecordError> {
    if text.len() > MAX_RECORD_LEN {
        return Err(RecordError::TooLong(text.len()));
    }
    if !text.is_ascii() {
        return Err(RecordError::Syntax("not ASCII"));
    }
    let mut tags: Vec<(&str, &str)> = Vec::new();
    let mut specs = text.split(';').peekable();
    while let Some(spec) = specs.next() {
        if spec.trim().is_empty() {
            if specs.peek().is_none() {
                break; // trailing ";"
            }
            return Err(RecordError::Syntax("empty tag-spec"));
        }
        let (name, value) = spec
            .split_once('=')
            .ok_or(RecordError::Syntax("tag-spec without ="))?;
        let name = name.trim();
        let value = value.trim();
        let valid_name = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(RecordError::Syntax("tag name is not ALPHA *(ALNUM / _)"));
        }
        if tags.iter().any(|(n, _)| *n == name) {
            return Err(RecordError::DuplicateTag(name.to_owned()));
        }
        tags.push((name, value));
    }
    Ok(tags)
}

/// Concatenates TXT character-strings as received into UTF-8 text, bounded first.
pub(crate) fn txt_text<S: AsRef<[u8]>>(strings: &[S]) -> Result<String, RecordError> {
    let mut bytes = Vec::new();
    for s in strings {
        let s = s.as_ref();
        if bytes.len() + s.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong(bytes.len() + s.len()));
        }
        bytes.extend_from_slice(s);
    }
    String::from_utf8(bytes).map_err(|_| RecordError::Syntax("not UTF-8"))
}

/// Cuts ASCII text into TXT character-strings of at most [`TXT_CHUNK`] bytes.
pub(crate) fn txt_chunks(text: &str) -> Vec<String> {
    // Callers pass ASCII, so any byte offset is a char boundary; lossy conversion never fires.
    text.as_bytes()
        .chunks(TXT_CHUNK)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn parse_keys(p: &str) -> Result<Vec<VerifyingKey>, RecordError> {
    let mut keys = Vec::new();
    for item in p.split(',') {
        // RFC 6376 §3.2 allows folding whitespace inside base64 values.
        let b64: String = item.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if b64.len() != 44 {
            return Err(bad("p", "not the base64 of a 32-byte key"));
        }
        let raw = BASE64
            .decode(b64.as_bytes())
            .map_err(|_| bad("p", "not base64"))?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("p", "not the base64 of a 32-byte key"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("p", "not a curve point"))?;
        if keys.len() == MAX_KEYS {
            return Err(bad("p", "more than 4 keys"));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn parse_key_ids(tag: &'static str, v: &str) -> Result<Vec<KeyId>, RecordError> {
    let mut ids = Vec::new();
    for item in v.split(',') {
        let id = item
            .trim()
            .parse::<KeyId>()
            .map_err(|_| bad(tag, "a key id is 16 hex digits"))?;
        if ids.len() == MAX_REVOKED {
            return Err(bad(tag, "too many key ids"));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn parse_secs(tag: &'static str, v: &str) -> Result<u64, RecordError> {
    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            tag,
            "not seconds since the Unix epoch (at most 12 digits)",
        ));
    }
    v.parse().map_err(|_| bad(tag, "not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn key(n: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[n; 32]).verifying_key()
    }

    pub(crate) fn sample() -> GroupRecord {
        GroupRecord {
            group: Ipv4Addr::new(232, 1, 1, 1),
            name: "web".into(),
            owner: "ops@example.org".into(),
            protected: true,
            keys: vec![key(7)],
            not_before: Timestamp::from_secs(1_700_000_000),
            not_after: Timestamp::from_secs(1_900_000_000),
            revoked: vec![KeyId([1, 2, 3, 4, 5, 6, 7, 8])],
            vip: Some(Ipv4Addr::new(203, 0, 113, 10)),
        }
    }

    #[test]
    fn text_vector_both_ways() {
        let text = sample().to_text().unwrap();
        let p = BASE64.encode(key(7).as_bytes());
        let i = KeyId::of(&key(7));
        assert_eq!(
            text,
            format!(
                "v=MC1; g=232.1.1.1; n=web; o=ops@example.org; f=protected; k=ed25519; \
                 p={p}; i={i}; t=1700000000; x=1900000000; r=0102030405060708; s=203.0.113.10"
            )
        );
        assert_eq!(GroupRecord::parse(&text).unwrap(), sample());
    }

    #[test]
    fn accepts_dkim_whitespace_trailing_semicolon_and_unknown_tags() {
        let p = BASE64.encode(key(7).as_bytes());
        let (a, b) = p.split_at(20);
        let text = format!(
            "v=MC1;g=232.1.1.1 ;\tn = web; o=ops@example.org; f=public; zz=later; \
             p={a} {b}; t=1; x=2;"
        );
        let r = GroupRecord::parse(&text).unwrap();
        assert!(!r.protected);
        assert_eq!(r.keys, vec![key(7)]);
        assert_eq!(r.vip, None);
    }

    #[test]
    fn refuses_bad_records_with_the_tag_at_fault() {
        let good = sample().to_text().unwrap();
        let cases: Vec<(String, &str)> = vec![
            (good.replacen("v=MC1", "v=MC2", 1), "v="),
            (good.replacen("v=MC1; ", "", 1) + "; v=MC1", "v="),
            (good.replacen("232.1.1.1", "10.1.1.1", 1), "g="),
            (good.replacen("232.1.1.1", "232.1.1", 1), "g="),
            (good.replacen("n=web", "n=Web!", 1), "n="),
            (good.replacen("f=protected", "f=maybe", 1), "f="),
            (good.replacen("k=ed25519", "k=rsa", 1), "ed25519"),
            (good.replacen("; t=1700000000", "", 1), "t="),
            (good.replacen("x=1900000000", "x=1600000000", 1), "x="),
            (good.replacen("r=0102030405060708", "r=01020304", 1), "r="),
            (good.replacen("s=203.0.113.10", "s=224.0.0.1", 1), "s="),
            (format!("{good}; g=232.1.1.2"), "twice"),
            (format!("{good}; novalue"), "without ="),
            (good.replacen("; ", ";; ", 1), "empty"),
            ("v=MC1; é=1".to_owned(), "ASCII"),
            ("x".repeat(MAX_RECORD_LEN + 1), "bytes"),
        ];
        for (text, expect) in cases {
            let err = GroupRecord::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
        }
        // i= must match the keys.
        let other = KeyId::of(&key(8));
        let text = good.replacen(&KeyId::of(&key(7)).to_string(), &other.to_string(), 1);
        assert!(GroupRecord::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("i="));
    }

    #[test]
    fn protected_needs_a_key_and_keys_are_bounded() {
        let mut r = sample();
        r.keys.clear();
        assert_eq!(r.to_text(), Err(RecordError::MissingTag("p")));
        r.keys = (1..=5).map(key).collect();
        assert!(r.to_text().is_err());
        r.keys = (1..=4).map(key).collect();
        r.revoked = (0..32).map(|n| KeyId([n; 8])).collect();
        let strings = r.to_txt_strings().unwrap();
        assert!(strings.len() > 1 && strings.iter().all(|s| s.len() <= TXT_CHUNK));
        assert_eq!(GroupRecord::parse_txt(&strings).unwrap(), r);
    }

    #[test]
    fn group_keys_carry_ids_and_revocations() {
        let gk = sample().to_group_keys();
        assert_eq!(gk.group, Ipv4Addr::new(232, 1, 1, 1));
        assert_eq!(gk.keys[0].id, KeyId::of(&key(7)));
        assert_eq!(gk.revoked_members, sample().revoked);
    }

    fn sample6() -> GroupRecord6 {
        let s = sample();
        GroupRecord {
            group: "ff3e::8000:1".parse().unwrap(),
            vip: Some("2001:db8::10".parse().unwrap()),
            name: s.name,
            owner: s.owner,
            protected: s.protected,
            keys: s.keys,
            not_before: s.not_before,
            not_after: s.not_after,
            revoked: s.revoked,
        }
    }

    #[test]
    fn ipv6_text_vector_both_ways() {
        let text = sample6().to_text().unwrap();
        let p = BASE64.encode(key(7).as_bytes());
        let i = KeyId::of(&key(7));
        assert_eq!(
            text,
            format!(
                "v=MC1; g=ff3e::8000:1; n=web; o=ops@example.org; f=protected; k=ed25519; \
                 p={p}; i={i}; t=1700000000; x=1900000000; r=0102030405060708; s=2001:db8::10"
            )
        );
        assert_eq!(GroupRecord6::parse_ipv6(&text).unwrap(), sample6());
        assert_eq!(
            AnyGroupRecord::parse(&text).unwrap(),
            AnyGroupRecord::V6(sample6())
        );
        // Any spelling of the address parses; the emitter writes RFC 5952's.
        let long = text.replacen("ff3e::8000:1", "FF3E:0:0:0:0:0:8000:0001", 1);
        assert_eq!(GroupRecord6::parse_ipv6(&long).unwrap(), sample6());
    }

    #[test]
    fn any_record_takes_ipv4_records_as_they_are() {
        let text = sample().to_text().unwrap();
        let any = AnyGroupRecord::parse(&text).unwrap();
        assert_eq!(any, AnyGroupRecord::V4(sample()));
        assert_eq!(any.to_text().unwrap(), text);
        assert_eq!(any.group(), IpAddr::V4(Ipv4Addr::new(232, 1, 1, 1)));
        assert_eq!(any.vip(), Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))));
        assert_eq!(any.name(), "web");
    }

    #[test]
    fn refuses_bad_ipv6_records_and_mixed_families() {
        let good = sample6().to_text().unwrap();
        let cases: Vec<(String, &str)> = vec![
            (
                good.replacen("ff3e::8000:1", "2001:db8::1", 1),
                "g=: not a multicast",
            ),
            (
                good.replacen("ff3e::8000:1", "ff3e::8000:1:", 1),
                "g=: not an IPv6",
            ),
            (
                good.replacen("s=2001:db8::10", "s=ff3e::1", 1),
                "s=: not a unicast",
            ),
            (
                good.replacen("s=2001:db8::10", "s=::", 1),
                "s=: not a unicast",
            ),
            (
                good.replacen("s=2001:db8::10", "s=::1", 1),
                "s=: not a unicast",
            ),
            (
                good.replacen("s=2001:db8::10", "s=fe80::1", 1),
                "link-local",
            ),
            (
                good.replacen("s=2001:db8::10", "s=::ffff:203.0.113.10", 1),
                "IPv4-mapped",
            ),
            (
                good.replacen("s=2001:db8::10", "s=203.0.113.10", 1),
                "s=: not an IPv6",
            ),
        ];
        for (text, expect) in cases {
            let err = GroupRecord6::parse_ipv6(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text:?}: {err}");
            let err = AnyGroupRecord::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expect), "any {text:?}: {err}");
        }
        // An IPv4 group with an IPv6 VIP; each family's parser refuses the other's record.
        let v4 = sample().to_text().unwrap();
        let mixed = v4.replacen("s=203.0.113.10", "s=2001:db8::10", 1);
        assert!(AnyGroupRecord::parse(&mixed)
            .unwrap_err()
            .to_string()
            .contains("s=: not an IPv4"));
        assert!(GroupRecord::parse(&good)
            .unwrap_err()
            .to_string()
            .contains("g=: not an IPv4"));
        assert!(GroupRecord6::parse_ipv6(&v4)
            .unwrap_err()
            .to_string()
            .contains("g=: not an IPv6"));
        // The emitter refuses what the parser refuses.
        let mut r = sample6();
        r.vip = Some("fe80::1".parse().unwrap());
        assert!(r.to_text().is_err());
        r.vip = None;
        r.group = "2001:db8::1".parse().unwrap();
        assert!(r.to_text().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = GroupRecord::parse(&s);
            let _ = AnyGroupRecord::parse(&s);
        }

        #[test]
        fn any_parse_never_panics_on_ipv6_tag_soup(
            s in "([gs]=[0-9a-fA-F:.%]{0,45};){0,4}([nofkpitxr]=[a-z0-9.@]{0,12};){0,6}"
        ) {
            let _ = AnyGroupRecord::parse(&format!("v=MC1;{s}"));
        }

        #[test]
        fn ipv6_emit_parse_round_trip(
            g in any::<u128>(),
            vip in proptest::option::of(any::<u128>()),
            nkeys in 1usize..=4,
            t in 0u64..4_000_000_000,
        ) {
            let r = GroupRecord6 {
                group: Ipv6Addr::from(0xff3e_u128 << 112 | (g >> 16)),
                name: "svc-6".into(),
                owner: "admin".into(),
                protected: true,
                keys: (1..=nkeys as u8).map(key).collect(),
                not_before: Timestamp::from_secs(t),
                not_after: Timestamp::from_secs(t + 1),
                revoked: Vec::new(),
                vip: vip.map(|v| Ipv6Addr::from(0x2001_0db8_u128 << 96 | (v >> 32))),
            };
            let strings = r.to_txt_strings().unwrap();
            prop_assert_eq!(GroupRecord6::parse_txt_ipv6(&strings).unwrap(), r.clone());
            prop_assert_eq!(AnyGroupRecord::parse_txt(&strings).unwrap(), AnyGroupRecord::V6(r));
        }

        #[test]
        fn parse_never_panics_on_tag_soup(s in "([vgnofkpitxrs]=[a-zA-Z0-9.,@+/= ]{0,50};){0,14}") {
            let _ = GroupRecord::parse(&format!("v=MC1;{s}"));
        }

        #[test]
        fn emit_parse_round_trip(
            g in 0xe000_0000u32..=0xefff_ffff,
            nkeys in 1usize..=4,
            revoked in proptest::collection::vec(any::<[u8; 8]>(), 0..=32),
            t in 0u64..4_000_000_000,
            d in 0u64..1_000_000_000,
            vip in proptest::option::of(1u32..0xe000_0000),
        ) {
            let r = GroupRecord {
                group: Ipv4Addr::from(g),
                name: "svc-1".into(),
                owner: "admin".into(),
                protected: true,
                keys: (1..=nkeys as u8).map(key).collect(),
                not_before: Timestamp::from_secs(t),
                not_after: Timestamp::from_secs(t + d),
                revoked: revoked.into_iter().map(KeyId).collect(),
                vip: vip.map(Ipv4Addr::from),
            };
            let strings = r.to_txt_strings().unwrap();
            prop_assert_eq!(GroupRecord::parse_txt(&strings).unwrap(), r);
        }
    }
}
