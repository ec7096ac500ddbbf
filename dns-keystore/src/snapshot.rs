//! The zone's durable state (SPEC.md §8.8): one checksummed snapshot file holding every record
//! an update can change, replaced atomically (temp file, fsync, rename, directory fsync) before
//! an update is answered. The format is sans-IO ([`encode`], [`decode`]); [`write_atomic`] is
//! the only writer of state files.

use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable as _, BinDecoder, BinEncodable as _, BinEncoder, NameEncoding,
};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The first 8 bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"MCKSZONE";
/// The format version after the magic; a reader refuses any other.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 4;
const CHECKSUM_LEN: usize = 32;

/// Record types made from the zone key when the zone is signed, never stored: a snapshot holds
/// the records updates write, and signing the loaded records rebuilds the rest.
pub fn is_derived(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::DNSKEY
            | RecordType::RRSIG
            | RecordType::NSEC
            | RecordType::NSEC3
            | RecordType::NSEC3PARAM
    )
}

/// Why snapshot bytes are not a snapshot: the file was cut short or changed on disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("shorter than a snapshot ({0} bytes)")]
    Truncated(usize),
    #[error("not a zone snapshot (bad magic)")]
    Magic,
    #[error("snapshot format version {0}, this build reads version 1")]
    Version(u32),
    #[error("checksum mismatch (cut short or changed on disk)")]
    Checksum,
    #[error("record {index}: {reason}")]
    Record { index: u32, reason: String },
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

/// Serialises `records` (the zone's content, SOA first by convention, derived types left out)
/// with the SOA `serial` for operators reading the header.
///
/// Layout: magic (8) | version u32 | serial u32 | record count u32 | records, each a u16
/// length and the record in DNS wire format (RFC 1035 §4.1.3, names uncompressed) | SHA-256
/// of everything before it (32). Integers are big-endian.
pub fn encode(serial: u32, records: &[Record]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * 128 + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&serial.to_be_bytes());
    let count = u32::try_from(records.len()).map_err(|_| "too many records".to_string())?;
    out.extend_from_slice(&count.to_be_bytes());
    let mut wire = Vec::with_capacity(512);
    for record in records {
        wire.clear();
        let mut encoder = BinEncoder::new(&mut wire);
        encoder.set_name_encoding(NameEncoding::Uncompressed);
        record
            .emit(&mut encoder)
            .map_err(|e| format!("{} {}: {e}", record.name, record.record_type()))?;
        let len = u16::try_from(wire.len())
            .map_err(|_| format!("{} {}: record too long", record.name, record.record_type()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&wire);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(sum.as_slice());
    Ok(out)
}

/// Reads snapshot bytes back: the checksum first (any cut or changed byte fails it), then
/// the structure, strictly (every byte accounted for). Never panics.
pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<Record>), SnapshotError> {
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(SnapshotError::Truncated(bytes.len()));
    }
    if bytes[..8] != MAGIC {
        return Err(SnapshotError::Magic);
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != sum {
        return Err(SnapshotError::Checksum);
    }
    let word = |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let version = word(8);
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let serial = word(12);
    let count = word(16);
    let mut rest = &body[HEADER_LEN..];
    let mut records = Vec::new();
    for index in 0..count {
        let bad = |reason: &str| SnapshotError::Record {
            index,
            reason: reason.to_owned(),
        };
        let [hi, lo, tail @ ..] = rest else {
            return Err(bad("cut short"));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if tail.len() < len {
            return Err(bad("cut short"));
        }
        let (wire, tail) = tail.split_at(len);
        let mut decoder = BinDecoder::new(wire);
        let record = Record::read(&mut decoder).map_err(|e| bad(&e.to_string()))?;
        if !decoder.is_empty() {
            return Err(bad("bytes after the record"));
        }
        records.push(record);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(SnapshotError::Trailing(rest.len()));
    }
    Ok((serial, records))
}

/// Where a failed [`write_atomic`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Nothing changed on disk: the temporary file could not be written or renamed (a full
    /// disk ends here) and has been removed.
    #[error("{0}")]
    NotWritten(std::io::Error),
    /// The rename happened but the directory could not be synced: whether the new file
    /// survives a crash is unknown.
    #[error("renamed, but syncing the directory failed: {0}")]
    Unsynced(std::io::Error),
}

impl WriteError {
    pub fn io(&self) -> &std::io::Error {
        match self {
            WriteError::NotWritten(e) | WriteError::Unsynced(e) => e,
        }
    }
}

/// The temporary file [`write_atomic`] writes `name` through; a start removes leftovers.
pub fn temp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Replaces `dir/name` with `bytes` so that a crash at any instant leaves the old file or the
/// new one, whole: write `name.tmp` (mode `mode`), fsync it, rename it over `name`, fsync `dir`.
/// Fails if the file exists and `replace` is false (keys are never overwritten).
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), WriteError> {
    let target = dir.join(name);
    let temp = dir.join(temp_name(name));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if !replace && target.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists",
            ));
        }
        fs::rename(&temp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(WriteError::NotWritten(e));
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WriteError::Unsynced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA, TXT};
    use hickory_proto::rr::{Name, RData};
    use std::net::Ipv4Addr;

    fn records() -> Vec<Record> {
        let zone = Name::from_ascii("groups.manycast.test.").expect("name");
        let ns = Name::from_ascii("ns.groups.manycast.test.").expect("name");
        let soa = SOA::new(ns.clone(), ns, 7, 3600, 600, 86_400, 300);
        vec![
            Record::from_rdata(zone.clone(), 3600, RData::SOA(soa)),
            Record::from_rdata(
                Name::from_ascii("web.groups.manycast.test.").expect("name"),
                300,
                RData::TXT(TXT::new(vec!["v=MC1; g=232.1.1.1".into(), "x".repeat(255)])),
            ),
            Record::from_rdata(
                Name::from_ascii("Web.groups.manycast.test.").expect("name"),
                300,
                RData::A(A(Ipv4Addr::new(203, 0, 113, 10))),
            ),
        ]
    }

    #[test]
    fn round_trips_records_and_serial() {
        let bytes = encode(7, &records()).expect("encodes");
        assert_eq!(&bytes[..8], b"MCKSZONE");
        assert_eq!(&bytes[8..12], &[0, 0, 0, 1], "version");
        assert_eq!(&bytes[12..16], &[0, 0, 0, 7], "serial");
        assert_eq!(&bytes[16..20], &[0, 0, 0, 3], "count");
        assert_eq!(decode(&bytes), Ok((7, records())));
        assert_eq!(decode(&encode(0, &[]).expect("empty")), Ok((0, vec![])));
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let bytes = encode(7, &records()).expect("encodes");
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len} accepted");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(decode(&damaged).is_err(), "flip at {at} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn structure_is_checked_behind_a_valid_checksum() {
        // A checksum over bad structure (what a bug, not a disk, would write) is still refused.
        let reseal = |mut body: Vec<u8>| {
            let sum = Sha256::digest(&body);
            body.extend_from_slice(sum.as_slice());
            body
        };
        let good = encode(7, &records()).expect("encodes");
        let body = good[..good.len() - CHECKSUM_LEN].to_vec();
        let mut more = body.clone();
        more[19] = 4;
        assert!(matches!(
            decode(&reseal(more)),
            Err(SnapshotError::Record { index: 3, .. })
        ));
        let mut fewer = body.clone();
        fewer[19] = 2;
        assert!(matches!(
            decode(&reseal(fewer)),
            Err(SnapshotError::Trailing(_))
        ));
        let mut version = body.clone();
        version[11] = 2;
        assert_eq!(decode(&reseal(version)), Err(SnapshotError::Version(2)));
        let mut garbage = body[..HEADER_LEN].to_vec();
        garbage[19] = 1;
        garbage.extend_from_slice(&[0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&reseal(garbage)),
            Err(SnapshotError::Record { index: 0, .. })
        ));
    }

    #[test]
    fn derived_types_are_the_signing_ones() {
        for t in [RecordType::DNSKEY, RecordType::RRSIG, RecordType::NSEC] {
            assert!(is_derived(t));
        }
        for t in [
            RecordType::SOA,
            RecordType::NS,
            RecordType::TXT,
            RecordType::A,
        ] {
            assert!(!is_derived(t));
        }
    }

    #[test]
    fn write_atomic_replaces_whole_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("dns-keystore-snap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        write_atomic(&dir, "f", b"one", 0o600, true).expect("write");
        write_atomic(&dir, "f", b"two", 0o600, true).expect("replace");
        assert_eq!(fs::read(dir.join("f")).expect("read"), b"two");
        assert!(matches!(
            write_atomic(&dir, "f", b"three", 0o600, false),
            Err(WriteError::NotWritten(_))
        ));
        assert_eq!(fs::read(dir.join("f")).expect("read"), b"two");
        assert!(!dir.join("f.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
