//! A minimal pcap writer (the classic libpcap format), enough to hand our datagrams to tshark.

use std::io::Write;
use std::path::Path;

/// LINKTYPE_RAW: each record is a bare IPv4 or IPv6 packet.
pub const LINKTYPE_RAW: u32 = 101;

/// Writes `packets` to `path`, one second apart from the Unix epoch so that ordering is visible.
pub fn write(path: &Path, linktype: u32, packets: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, microsecond timestamps
    out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&linktype.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        let len = u32::try_from(p.len())
            .map_err(|_| std::io::Error::other("packet too long for pcap"))?;
        let secs = u32::try_from(i + 1).map_err(|_| std::io::Error::other("too many packets"))?;
        out.extend_from_slice(&secs.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes()); // captured
        out.extend_from_slice(&len.to_le_bytes()); // on the wire
        out.extend_from_slice(p);
    }
    std::fs::File::create(path)?.write_all(&out)
}

/// A file under the target's scratch directory, removed when dropped.
#[derive(Debug)]
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl TempFile {
    pub fn new(stem: &str, ext: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{stem}-{}-{n}.{ext}", std::process::id()));
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
