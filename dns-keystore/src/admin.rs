//! The update API the admin tool uses: RFC 2136 dynamic updates signed with TSIG (RFC 8945,
//! HMAC-SHA256). Publishing a record replaces both of its names' TXT, A and AAAA RRsets in one
//! update, so a reader never sees half a record (nor an address of the family it replaced).
//! Rotation and revocation are new records.

use crate::cert_record::CertRecord;
use crate::client::{exchange, rand_id, FetchError};
use crate::names;
use crate::record::{GroupFamily, GroupRecord, RecordError};
use hickory_proto::op::{Message, OpCode, Query, ResponseCode, UpdateMessage as _};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use igmp_ext::ed25519_dalek::VerifyingKey;
use igmp_ext::KeyId;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why an update did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Transport(#[from] FetchError),
    #[error("keystore refused the update: {0}")]
    Refused(String),
    #[error("admin setup: {0}")]
    Setup(String),
}

/// A TSIG-authenticated update client for one keystore zone.
pub struct Admin {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
    ttl: u32,
    timeout: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl Admin {
    pub fn new(
        server: SocketAddr,
        zone: &str,
        key_name: &str,
        key: Vec<u8>,
        ttl: u32,
    ) -> Result<Admin, AdminError> {
        let zone = names::zone_name(zone).map_err(|e| AdminError::Setup(e.to_string()))?;
        let key_name =
            Name::from_ascii(key_name).map_err(|e| AdminError::Setup(format!("key name: {e}")))?;
        let signer = TSigner::new(key, TsigAlgorithm::HmacSha256, key_name, 300)
            .map_err(|e| AdminError::Setup(format!("TSIG key: {e}")))?;
        Ok(Admin {
            server,
            zone,
            signer,
            ttl,
            timeout: Duration::from_secs(3),
        })
    }

    fn update_message(&self) -> Message {
        let mut m = Message::query();
        m.metadata.id = rand_id();
        m.metadata.op_code = OpCode::Update;
        m.metadata.recursion_desired = false;
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        m.add_zone(zone);
        m
    }

    fn delete_rrset(m: &mut Message, name: &Name, rtype: RecordType) {
        let mut r = Record::update0(name.clone(), 0, rtype);
        r.dns_class = DNSClass::ANY;
        m.add_update(r);
    }

    /// The record's two names (SPEC.md §8.2): its service name and its group-address name.
    fn record_names<A: GroupFamily>(
        &self,
        record: &GroupRecord<A>,
    ) -> Result<[Name; 2], AdminError> {
        let at_service = names::service_name(&self.zone, &record.name)
            .map_err(|e| AdminError::Setup(e.to_string()))?;
        let at_group = names::group_address_name(&self.zone, record.group.into());
        Ok([at_service, at_group])
    }

    /// Deletes the TXT and both address RRsets at `name`: a record that changes family leaves
    /// no address of the old one behind.
    fn delete_record_rrsets(m: &mut Message, name: &Name) {
        for rtype in [RecordType::TXT, RecordType::A, RecordType::AAAA] {
            Self::delete_rrset(m, name, rtype);
        }
    }

    /// Publishes (or replaces) `record` at its service name and its group-address name: TXT the
    /// record, and an A (IPv4) or AAAA (IPv6) record: the VIP at the service name if there is
    /// one, else the group address.
    pub async fn publish<A: GroupFamily>(&self, record: &GroupRecord<A>) -> Result<(), AdminError> {
        let strings = record.to_txt_strings()?;
        let [at_service, at_group] = self.record_names(record)?;
        let mut m = self.update_message();
        for (name, addr) in [
            (&at_service, record.vip.unwrap_or(record.group)),
            (&at_group, record.group),
        ] {
            Self::delete_record_rrsets(&mut m, name);
            m.add_update(Record::from_rdata(
                name.clone(),
                self.ttl,
                RData::TXT(TXT::new(strings.clone())),
            ));
            let address = match addr.into() {
                IpAddr::V4(a) => RData::A(A(a)),
                IpAddr::V6(a) => RData::AAAA(AAAA(a)),
            };
            m.add_update(Record::from_rdata(name.clone(), self.ttl, address));
        }
        self.send(m).await
    }

    /// Removes `record` from both of its names.
    pub async fn withdraw<A: GroupFamily>(
        &self,
        record: &GroupRecord<A>,
    ) -> Result<(), AdminError> {
        let names = self.record_names(record)?;
        let mut m = self.update_message();
        for name in &names {
            Self::delete_record_rrsets(&mut m, name);
        }
        self.send(m).await
    }

    /// Publishes (or replaces) a member certificate at `<member key id>.m.<zone>` (SPEC.md §8.7).
    pub async fn publish_certificate(&self, record: &CertRecord) -> Result<(), AdminError> {
        let name = names::member_name(&self.zone, record.member_key_id());
        let mut m = self.update_message();
        Self::delete_rrset(&mut m, &name, RecordType::TXT);
        m.add_update(Record::from_rdata(
            name,
            self.ttl,
            RData::TXT(TXT::new(record.to_txt_strings())),
        ));
        self.send(m).await
    }

    /// Removes the certificate published for member key `member`. Withdrawing does not revoke:
    /// a member still holds its certificate and may present it in joins; revoke the key in the
    /// group record ([`revoke_member`]) for that.
    pub async fn withdraw_certificate(&self, member: KeyId) -> Result<(), AdminError> {
        let name = names::member_name(&self.zone, member);
        let mut m = self.update_message();
        Self::delete_rrset(&mut m, &name, RecordType::TXT);
        self.send(m).await
    }

    /// Signs and sends an update; `Ok` only on NOERROR.
    pub async fn send(&self, mut m: Message) -> Result<(), AdminError> {
        // TSIG's time signed is in seconds (RFC 8945 §4.3.3).
        let now = daemon_kit::wall_clock().as_millis() / 1000;
        m.finalize(&self.signer, now)
            .map_err(|e| AdminError::Setup(format!("TSIG signing: {e}")))?;
        let answer = exchange(self.server, &m, self.timeout).await?;
        match answer.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(AdminError::Refused(code.to_string())),
        }
    }
}

/// `record` with `new_key` added (newest last, the oldest dropped beyond [`crate::record::MAX_KEYS`]).
/// Publish it, reissue certificates, then publish [`retire_key`] of it.
pub fn rotate_key<A: GroupFamily>(
    record: &GroupRecord<A>,
    new_key: VerifyingKey,
) -> GroupRecord<A> {
    let mut r = record.clone();
    r.keys.retain(|k| *k != new_key);
    r.keys.push(new_key);
    while r.keys.len() > crate::record::MAX_KEYS {
        r.keys.remove(0);
    }
    r
}

/// `record` without the group key `old`.
pub fn retire_key<A: GroupFamily>(record: &GroupRecord<A>, old: KeyId) -> GroupRecord<A> {
    let mut r = record.clone();
    r.keys.retain(|k| KeyId::of(k) != old);
    r
}

/// `record` with member key `member` revoked (the oldest revocation dropped beyond
/// [`crate::record::MAX_REVOKED`]; expire certificates before then).
pub fn revoke_member<A: GroupFamily>(record: &GroupRecord<A>, member: KeyId) -> GroupRecord<A> {
    let mut r = record.clone();
    if !r.revoked.contains(&member) {
        r.revoked.push(member);
    }
    while r.revoked.len() > crate::record::MAX_REVOKED {
        r.revoked.remove(0);
    }
    r
}
