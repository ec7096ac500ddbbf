//! Group records (RFC 3376 §4.2.4, RFC 9776 §4.2.4), shared by IGMPv3 and MLDv2 (RFC 3810 §5.2.4):
//! the two differ only in the width of their addresses, so the view and the `Repr` are generic
//! over [`GroupAddress`].

use super::{need, read_u16, WireError, WireResult};
use core::fmt::Debug;
use core::net::{Ipv4Addr, Ipv6Addr};

/// An address family a group record can carry: IPv4 for IGMPv3, IPv6 for MLDv2.
pub trait GroupAddress: Copy + Eq + Ord + Debug + 'static {
    /// Bytes on the wire.
    const LEN: usize;
    /// Reads an address from exactly `LEN` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Writes the address into exactly `LEN` bytes.
    fn write(&self, bytes: &mut [u8]);
}

impl GroupAddress for Ipv4Addr {
    const LEN: usize = 4;
    fn read(b: &[u8]) -> Self {
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    fn write(&self, b: &mut [u8]) {
        b.copy_from_slice(&self.octets())
    }
}

impl GroupAddress for Ipv6Addr {
    const LEN: usize = 16;
    fn read(b: &[u8]) -> Self {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[..16]);
        Ipv6Addr::from(o)
    }
    fn write(&self, b: &mut [u8]) {
        b.copy_from_slice(&self.octets())
    }
}

/// Group record types (RFC 3376 §4.2.12); MLDv2 uses the same values. Total: unknown types are
/// kept so that a parser can skip them as the RFC asks (§4.2.12: "silently ignored").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    ModeIsInclude,
    ModeIsExclude,
    ChangeToIncludeMode,
    ChangeToExcludeMode,
    AllowNewSources,
    BlockOldSources,
    Unknown(u8),
}

impl From<u8> for RecordType {
    fn from(v: u8) -> Self {
        match v {
            0x01 => RecordType::ModeIsInclude,
            0x02 => RecordType::ModeIsExclude,
            0x03 => RecordType::ChangeToIncludeMode,
            0x04 => RecordType::ChangeToExcludeMode,
            0x05 => RecordType::AllowNewSources,
            0x06 => RecordType::BlockOldSources,
            other => RecordType::Unknown(other),
        }
    }
}

impl From<RecordType> for u8 {
    fn from(t: RecordType) -> u8 {
        match t {
            RecordType::ModeIsInclude => 0x01,
            RecordType::ModeIsExclude => 0x02,
            RecordType::ChangeToIncludeMode => 0x03,
            RecordType::ChangeToExcludeMode => 0x04,
            RecordType::AllowNewSources => 0x05,
            RecordType::BlockOldSources => 0x06,
            RecordType::Unknown(v) => v,
        }
    }
}

impl RecordType {
    /// True for the records whose source list is the set of sources the sender wants
    /// (INCLUDE-mode current state, change to INCLUDE, ALLOW).
    pub fn is_include_like(self) -> bool {
        matches!(
            self,
            RecordType::ModeIsInclude
                | RecordType::ChangeToIncludeMode
                | RecordType::AllowNewSources
        )
    }
}

mod field {
    pub const TYPE: usize = 0;
    pub const AUX_LEN: usize = 1;
    pub const NUM_SOURCES: usize = 2;
    pub const GROUP: usize = 4;
}

/// Fixed part of a record before the group address.
const FIXED_LEN: usize = field::GROUP;

/// A checked view of one group record at the start of a buffer that may continue past it.
#[derive(Debug, Clone, Copy)]
pub struct GroupRecord<'a, A: GroupAddress> {
    buf: &'a [u8],
    _family: core::marker::PhantomData<A>,
}

impl<'a, A: GroupAddress> GroupRecord<'a, A> {
    /// Checks that the record, its sources and its auxiliary data all lie within `buf`.
    pub fn new_checked(buf: &'a [u8]) -> WireResult<Self> {
        need("group record header", buf, FIXED_LEN + A::LEN)?;
        let len = Self::record_len(buf);
        need("group record sources and aux data", buf, len)?;
        Ok(GroupRecord {
            buf: &buf[..len],
            _family: core::marker::PhantomData,
        })
    }

    fn record_len(buf: &[u8]) -> usize {
        let sources = usize::from(read_u16(buf, field::NUM_SOURCES));
        let aux_words = usize::from(buf[field::AUX_LEN]);
        FIXED_LEN + A::LEN * (1 + sources) + 4 * aux_words
    }

    /// Bytes this record occupies, header to the end of its aux data.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn record_type(&self) -> RecordType {
        RecordType::from(self.buf[field::TYPE])
    }

    pub fn group(&self) -> A {
        A::read(&self.buf[field::GROUP..field::GROUP + A::LEN])
    }

    pub fn num_sources(&self) -> usize {
        usize::from(read_u16(self.buf, field::NUM_SOURCES))
    }

    pub fn sources(&self) -> impl ExactSizeIterator<Item = A> + 'a {
        let start = FIXED_LEN + A::LEN;
        let end = start + A::LEN * self.num_sources();
        self.buf[start..end].chunks_exact(A::LEN).map(A::read)
    }

    /// Auxiliary data (RFC 3376 §4.2.10): no meaning is defined; we never send any.
    pub fn aux_data(&self) -> &'a [u8] {
        let start = FIXED_LEN + A::LEN * (1 + self.num_sources());
        &self.buf[start..]
    }
}

/// Iterates over `count` consecutive records; yields an error (once) where one does not fit.
pub fn records<A: GroupAddress>(
    mut buf: &[u8],
    count: usize,
) -> impl Iterator<Item = WireResult<GroupRecord<'_, A>>> {
    let mut left = count;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        match GroupRecord::<A>::new_checked(buf) {
            Ok(r) => {
                buf = &buf[r.len()..];
                left -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                left = 0;
                Some(Err(e))
            }
        }
    })
}

/// An owned group record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecordRepr<A: GroupAddress> {
    pub record_type: RecordType,
    pub group: A,
    pub sources: Vec<A>,
    /// Whole 32-bit words; empty for everything we send.
    pub aux_data: Vec<u8>,
}

impl<A: GroupAddress> GroupRecordRepr<A> {
    pub fn parse(record: &GroupRecord<'_, A>) -> Self {
        GroupRecordRepr {
            record_type: record.record_type(),
            group: record.group(),
            sources: record.sources().collect(),
            aux_data: record.aux_data().to_vec(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        FIXED_LEN + A::LEN * (1 + self.sources.len()) + self.aux_data.len()
    }

    /// Checks the limits the header can express. Callers building records call this first.
    pub fn validate(&self) -> WireResult<()> {
        if self.sources.len() > usize::from(u16::MAX) {
            return Err(WireError::Malformed(
                "more than 65535 sources in one record",
            ));
        }
        if self.aux_data.len() % 4 != 0 || self.aux_data.len() / 4 > usize::from(u8::MAX) {
            return Err(WireError::Malformed(
                "aux data is not a whole number of words below 1024 bytes",
            ));
        }
        Ok(())
    }

    /// Writes the record into `buf[..buffer_len()]`.
    ///
    /// # Panics
    /// When `validate()` fails or `buf` is short: caller bugs.
    pub fn emit(&self, buf: &mut [u8]) {
        self.validate()
            .expect("record exceeds what its header can express");
        buf[field::TYPE] = self.record_type.into();
        buf[field::AUX_LEN] = (self.aux_data.len() / 4) as u8;
        buf[field::NUM_SOURCES..field::NUM_SOURCES + 2]
            .copy_from_slice(&(self.sources.len() as u16).to_be_bytes());
        self.group
            .write(&mut buf[field::GROUP..field::GROUP + A::LEN]);
        let mut at = FIXED_LEN + A::LEN;
        for s in &self.sources {
            s.write(&mut buf[at..at + A::LEN]);
            at += A::LEN;
        }
        buf[at..at + self.aux_data.len()].copy_from_slice(&self.aux_data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_RECORD: [u8; 16] = [
        0x01, 0x00, 0x00, 0x02, 0xe8, 0x01, 0x01, 0x01, 0x0a, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x01,
    ];

    #[test]
    fn v4_round_trip() {
        let r = GroupRecord::<Ipv4Addr>::new_checked(&V4_RECORD).unwrap();
        let repr = GroupRecordRepr::parse(&r);
        assert_eq!(repr.record_type, RecordType::ModeIsInclude);
        assert_eq!(repr.group, Ipv4Addr::new(232, 1, 1, 1));
        assert_eq!(
            repr.sources,
            vec![Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 1)]
        );
        let mut out = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut out);
        assert_eq!(out, V4_RECORD);
    }

    #[test]
    fn v6_records_share_the_shape() {
        let repr = GroupRecordRepr {
            record_type: RecordType::AllowNewSources,
            group: "ff3e::1234".parse::<Ipv6Addr>().unwrap(),
            sources: vec!["2001:db8::1".parse().unwrap()],
            aux_data: vec![1, 2, 3, 4],
        };
        let mut out = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut out);
        assert_eq!(out.len(), 4 + 16 + 16 + 4);
        let back = GroupRecordRepr::parse(&GroupRecord::<Ipv6Addr>::new_checked(&out).unwrap());
        assert_eq!(back, repr);
    }

    #[test]
    fn truncated_and_unknown() {
        assert!(GroupRecord::<Ipv4Addr>::new_checked(&V4_RECORD[..15]).is_err());
        let mut aux = V4_RECORD.to_vec();
        aux[1] = 1; // one aux word announced, none present
        assert!(GroupRecord::<Ipv4Addr>::new_checked(&aux).is_err());
        let mut unknown = V4_RECORD;
        unknown[0] = 0x7f;
        let r = GroupRecord::<Ipv4Addr>::new_checked(&unknown).unwrap();
        assert_eq!(r.record_type(), RecordType::Unknown(0x7f));
        assert_eq!(u8::from(r.record_type()), 0x7f);
    }

    #[test]
    fn records_iterator_stops_at_first_error() {
        let mut two = V4_RECORD.to_vec();
        two.extend_from_slice(&V4_RECORD[..10]);
        let got: Vec<_> = records::<Ipv4Addr>(&two, 2).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok() && got[1].is_err());
    }
}
