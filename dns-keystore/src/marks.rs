//! The rollback marks (issue 13, item 14): per trust anchor and group, the RRSIG inception of the
//! newest record a client accepted, kept on disk so that a restarted verifier or server still refuses a replayed
//! older record (one signed before a revocation, say) for as long as its signature is valid.
//!
//! One small text file, replaced whole (temp file, fsync, rename, directory fsync: a crash
//! leaves the old file or the new one), with a SHA-256 line that catches damage. Processes that
//! share the file serialize on `<file>.lock` and merge (a mark only rises), so none loses
//! another's update.

use crate::snapshot::write_atomic;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const HEADER: &str = "manycast-rollback-marks 1\n";

/// Whose record a mark is about: the trust anchor (inceptions of different keystores do not
/// compare) and the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MarkKey {
    /// The first 8 bytes of SHA-256 over the anchor's zone name and public key.
    pub anchor: u64,
    /// The group, of either family (a file written before IPv6 groups holds IPv4 ones only).
    pub group: IpAddr,
}

impl MarkKey {
    pub fn new(anchor: &crate::validate::TrustAnchor, group: impl Into<IpAddr>) -> Self {
        let mut h = Sha256::new();
        h.update(anchor.zone.to_ascii().to_ascii_lowercase().as_bytes());
        h.update([0]);
        h.update(&anchor.public_key);
        let d = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        MarkKey {
            anchor: u64::from_be_bytes(first),
            group: group.into(),
        }
    }
}
const SUM_PREFIX: &str = "sha256 ";

/// Why the marks file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarksError {
    /// The file is there but is not a marks file we wrote whole. A crash cannot leave it so
    /// (it is replaced by rename), so this is damage or tampering: an operator decides.
    #[error(
        "rollback marks {path}: damaged ({reason}); remove it to start over (older signed \
         records are then accepted again until a newer one has been seen)"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("rollback marks {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The newest accepted RRSIG inception per anchor and group, in memory and (when opened on a file) on
/// disk before it is relied on.
#[derive(Debug, Default)]
pub struct RollbackMarks {
    path: Option<PathBuf>,
    marks: BTreeMap<MarkKey, u64>,
    /// A raise that could not be written yet: written with the next one.
    unsaved: bool,
}

impl RollbackMarks {
    /// Marks that live as long as the process (tests, one-shot tools).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The marks kept in `path`: none yet if it does not exist (its directory is created).
    pub fn open(path: &Path) -> Result<Self, MarksError> {
        if let Some(dir) = parent(path) {
            fs::create_dir_all(dir).map_err(|source| MarksError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(RollbackMarks {
            marks: read(path)?,
            path: Some(path.to_owned()),
            unsaved: false,
        })
    }

    pub fn get(&self, key: MarkKey) -> Option<u64> {
        self.marks.get(&key).copied()
    }

    /// Raises `key`'s mark to `inception` (a mark never falls) and, if it rose (or an earlier
    /// raise is still unsaved), writes the file before returning. On a write error the mark
    /// still holds in memory and the write is tried again with the next raise.
    pub fn raise(&mut self, key: MarkKey, inception: u64) -> Result<(), MarksError> {
        let mark = self.marks.entry(key).or_insert(0);
        let rose = inception > *mark;
        *mark = (*mark).max(inception);
        if !(rose || self.unsaved) {
            return Ok(());
        }
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.unsaved = true;
        self.save(&path)?;
        self.unsaved = false;
        Ok(())
    }

    /// Under the lock file: merges what is on disk (another process's marks), writes the union.
    fn save(&mut self, path: &Path) -> Result<(), MarksError> {
        let io = |source| MarksError::Io {
            path: path.to_owned(),
            source,
        };
        let lock_path = sibling(path, ".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        let _lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| io(std::io::Error::from(e)))?;
        for (g, m) in read(path)? {
            let mine = self.marks.entry(g).or_insert(0);
            *mine = (*mine).max(m);
        }
        let dir = parent(path).unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io(std::io::Error::new(ErrorKind::InvalidInput, "no file name")))?;
        write_atomic(dir, name, &encode(&self.marks), 0o644, true)
            .map_err(|e| io(std::io::Error::new(e.io().kind(), e.to_string())))
        // The lock is released when `_lock` is dropped.
    }
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read(path: &Path) -> Result<BTreeMap<MarkKey, u64>, MarksError> {
    match fs::read(path) {
        Ok(bytes) => decode(&bytes).map_err(|reason| MarksError::Damaged {
            path: path.to_owned(),
            reason,
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(MarksError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `HEADER`, one `anchor group inception` line per mark, then `sha256 <hex of everything
/// before>`.
pub fn encode(marks: &BTreeMap<MarkKey, u64>) -> Vec<u8> {
    let mut body = String::from(HEADER);
    for (k, m) in marks {
        body.push_str(&format!("{:016x} {} {m}\n", k.anchor, k.group));
    }
    let sum = hex(Sha256::digest(body.as_bytes()).as_slice());
    body.push_str(&format!("{SUM_PREFIX}{sum}\n"));
    body.into_bytes()
}

/// The checksum first (any cut or changed byte fails it), then every line, strictly.
pub fn decode(bytes: &[u8]) -> Result<BTreeMap<MarkKey, u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_string())?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or("no checksum line")?;
    let (body, sum_line) = text.split_at(body_end);
    let sum = sum_line
        .strip_prefix(SUM_PREFIX)
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or("no checksum line")?;
    if hex(Sha256::digest(body.as_bytes()).as_slice()) != sum {
        return Err("checksum mismatch".into());
    }
    let lines = body.strip_prefix(HEADER).ok_or("unknown header")?;
    let mut marks = BTreeMap::new();
    for line in lines.lines() {
        let mut fields = line.split(' ');
        let (Some(a), Some(g), Some(m), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("bad line {line:?}"));
        };
        let bad = |what: &str| format!("bad {what} in {line:?}");
        let anchor = u64::from_str_radix(a, 16).map_err(|_| bad("anchor"))?;
        let group: IpAddr = g.parse().map_err(|_| bad("group"))?;
        let m: u64 = m.parse().map_err(|_| bad("mark"))?;
        if marks.insert(MarkKey { anchor, group }, m).is_some() {
            return Err(format!("{group} of anchor {a} listed twice"));
        }
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: MarkKey = MarkKey {
        anchor: 0x0123_4567_89ab_cdef,
        group: IpAddr::V4(std::net::Ipv4Addr::new(232, 1, 1, 1)),
    };
    const H: MarkKey = MarkKey {
        anchor: 7,
        group: IpAddr::V4(std::net::Ipv4Addr::new(232, 1, 1, 1)),
    };

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("marks-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn marks_survive_a_reopen_and_never_fall() {
        let d = dir("reopen");
        let path = d.join("state").join("marks");
        let mut m = RollbackMarks::open(&path).expect("a missing file is no marks");
        assert_eq!(m.get(G), None);
        m.raise(G, 100).unwrap();
        m.raise(G, 50).unwrap();
        assert_eq!(m.get(G), Some(100));
        let again = RollbackMarks::open(&path).unwrap();
        assert_eq!(again.get(G), Some(100));
        assert!(!d.join("state").join("marks.tmp").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn two_writers_merge_instead_of_losing_an_update() {
        let d = dir("merge");
        let path = d.join("marks");
        let mut a = RollbackMarks::open(&path).unwrap();
        let mut b = RollbackMarks::open(&path).unwrap();
        a.raise(G, 200).unwrap();
        b.raise(H, 7).unwrap();
        b.raise(G, 150).unwrap();
        let c = RollbackMarks::open(&path).unwrap();
        assert_eq!((c.get(G), c.get(H)), (Some(200), Some(7)));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let marks = BTreeMap::from([(G, 1_765_000_000), (H, 3)]);
        let bytes = encode(&marks);
        assert_eq!(decode(&bytes), Ok(marks));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
        let d = dir("damaged");
        fs::create_dir_all(&d).unwrap();
        let path = d.join("marks");
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let e = RollbackMarks::open(&path).unwrap_err();
        assert!(matches!(e, MarksError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("remove it to start over"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn ipv6_groups_have_their_own_marks_and_old_files_still_read() {
        let six = MarkKey {
            anchor: G.anchor,
            group: "ff3e::8000:1".parse().unwrap(),
        };
        let marks = BTreeMap::from([(G, 10), (six, 20)]);
        let bytes = encode(&marks);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("0123456789abcdef ff3e::8000:1 20\n"),
            "{text}"
        );
        assert_eq!(decode(&bytes), Ok(marks));
        // A file written before IPv6 groups (IPv4 lines only) reads as it did.
        let old = encode(&BTreeMap::from([(G, 10)]));
        assert_eq!(
            String::from_utf8(old.clone()).unwrap().lines().nth(1),
            Some("0123456789abcdef 232.1.1.1 10")
        );
        assert_eq!(decode(&old), Ok(BTreeMap::from([(G, 10)])));
    }
}
