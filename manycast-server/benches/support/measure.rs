//! What the namespace benchmarks (`attack`, `insider`) measure on a [`crate::probe::Probe`]'s
//! log: which client sources were answered throughout a window, and how long each went
//! without an answer.

use manycast_e2e::cluster_bench::ProbeReply;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// A source silent for longer than this during a window counts as not served.
pub const SILENCE: Duration = Duration::from_secs(1);

/// 85 consecutive client addresses from 10.1.0.2: 85 distinct units of the default 8-bit
/// low-order slicing, whatever way the allocation deals them to the members.
pub fn client_sources() -> Vec<Ipv4Addr> {
    (0..85u8).map(|k| Ipv4Addr::new(10, 1, 0, 2 + k)).collect()
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Per source (`0..n`), the longest time without a served answer in [from, to], the stretches
/// from `from` to its first answer and from its last answer to `to` included (the whole window
/// for a source never answered).
pub fn longest_silence(log: &[ProbeReply], n: usize, from: Instant, to: Instant) -> Vec<Duration> {
    let mut times: BTreeMap<usize, Vec<Instant>> = BTreeMap::new();
    for r in log
        .iter()
        .filter(|r| r.served && r.at >= from && r.at <= to)
    {
        times.entry(r.source).or_default().push(r.at);
    }
    (0..n)
        .map(|s| {
            let mut last = from;
            let mut longest = Duration::ZERO;
            for &at in times.get(&s).map_or(&[][..], Vec::as_slice) {
                longest = longest.max(at - last);
                last = at;
            }
            longest.max(to - last)
        })
        .collect()
}

/// Per source, whether it was answered throughout [from, to]: never silent over [`SILENCE`].
pub fn served_throughout(log: &[ProbeReply], n: usize, from: Instant, to: Instant) -> Vec<bool> {
    longest_silence(log, n, from, to)
        .into_iter()
        .map(|d| d <= SILENCE)
        .collect()
}
