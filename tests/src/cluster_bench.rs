//! The pure logic of the cluster benchmarks (`benches/balance.rs`, `benches/disruption.rs`,
//! `benches/failover.rs`), kept here so that `cargo test` checks it while the benchmarks
//! themselves only run under `make bench`.

use control_channel::sim::Rng;
use igmp_ext::{Allocation, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// `n` distinct IPv4 client sources drawn uniformly over the address space that the Regional
/// Internet Registries have delegated (the RIR statistics shipped in the `iptocc` crate): a
/// block's chance is proportional to its size, and the address inside it is uniform.
/// Unallocated, private, multicast and reserved space is never drawn.
pub fn allocated_sources(rng: &mut Rng, n: usize) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let addr = rng.next_u64() as u32;
        if is_allocated(addr) && seen.insert(addr) {
            out.push(addr);
        }
    }
    out
}

/// Whether `addr` lies in a block a registry has delegated to a country.
pub fn is_allocated(addr: u32) -> bool {
    iptocc::country_code(Ipv4Addr::from(addr)).is_some()
}

/// Max over mean of per-server loads: 1.0 is a perfect spread. 0 when there is no load.
pub fn max_over_mean(loads: &[f64]) -> f64 {
    let total: f64 = loads.iter().sum();
    if loads.is_empty() || total <= 0.0 {
        return 0.0;
    }
    let max = loads.iter().copied().fold(f64::MIN, f64::max);
    max / (total / loads.len() as f64)
}

/// Per-server load: `weights[i]` of source `sources[i]` goes to server `pick(i, source)`.
pub fn loads(
    servers: usize,
    sources: &[u32],
    weights: &[f64],
    mut pick: impl FnMut(usize, u32) -> usize,
) -> Vec<f64> {
    let mut out = vec![0.0; servers];
    for (i, (&s, &w)) in sources.iter().zip(weights).enumerate() {
        out[pick(i, s)] += w;
    }
    out
}

/// Request weights for `n` sources following Zipf's law with exponent `s` (rank r weighs
/// 1/r^s), the ranks shuffled over the sources so that heavy hitters land anywhere.
pub fn zipf_weights(rng: &mut Rng, n: usize, s: f64) -> Vec<f64> {
    let mut w: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
    // Fisher–Yates.
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        w.swap(i, j);
    }
    w
}

/// A 64-bit mix (splitmix64's finaliser) keyed by `seed`: the hash for Maglev below.
pub fn mix(x: u64, seed: u64) -> u64 {
    let mut z = x ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_name(name: &str, seed: u64) -> u64 {
    name.bytes().fold(mix(name.len() as u64, seed), |h, b| {
        mix(h ^ u64::from(b), seed)
    })
}

/// Google's Maglev consistent-hashing lookup table (Eisenbud et al., NSDI 2016, §3.4): each
/// backend walks its own permutation of the `m` slots (offset and skip from two hashes of its
/// name, `m` prime) and the backends take turns claiming their next free slot until the table
/// is full. A flow goes to `table[hash(flow) % m]`.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<usize>,
}

impl Maglev {
    /// The table for `backends` (by name); `m` must be prime and larger than the backend count.
    pub fn new(backends: &[String], m: usize) -> Maglev {
        assert!(!backends.is_empty() && backends.len() < m);
        let perm: Vec<(usize, usize)> = backends
            .iter()
            .map(|b| {
                let offset = (hash_name(b, 1) % m as u64) as usize;
                let skip = (hash_name(b, 2) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; backends.len()];
        let mut table = vec![usize::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perm.iter().enumerate() {
                let mut c = (offset + next[i] * skip) % m;
                while table[c] != usize::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c] = i;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    /// The backend (index into the names given to `new`) for a flow from `source`.
    pub fn lookup(&self, source: u32) -> usize {
        self.table[(mix(u64::from(source), 3) % self.table.len() as u64) as usize]
    }

    pub fn table(&self) -> &[usize] {
        &self.table
    }
}

/// The share of `sources` whose owner differs between two allocations (a source without an
/// owner before is not counted as moved, as in [`Allocation::moved`]).
pub fn moved_share(before: &Allocation, after: &Allocation, sources: &[u32]) -> f64 {
    if sources.is_empty() {
        return 0.0;
    }
    let moved = sources
        .iter()
        .filter(|&&s| {
            let a = before.owner_of(s);
            a.is_some() && a != after.owner_of(s)
        })
        .count();
    moved as f64 / sources.len() as f64
}

/// The least share of sources any proportional reallocation from `before` members to `after`
/// members must move: the leavers' fair share of the old weights, plus the joiners' fair share
/// of the new ones (for one change at a time: a joiner's or a leaver's share).
pub fn fair_share_moved(before: &[(MemberId, u32)], after: &[(MemberId, u32)]) -> f64 {
    let total = |ms: &[(MemberId, u32)]| ms.iter().map(|&(_, w)| f64::from(w)).sum::<f64>();
    let has = |ms: &[(MemberId, u32)], m: MemberId| ms.iter().any(|&(x, _)| x == m);
    let left: f64 = before
        .iter()
        .filter(|&&(m, _)| !has(after, m))
        .map(|&(_, w)| f64::from(w))
        .sum();
    let joined: f64 = after
        .iter()
        .filter(|&&(m, _)| !has(before, m))
        .map(|&(_, w)| f64::from(w))
        .sum();
    let mut share = 0.0;
    if total(before) > 0.0 {
        share += left / total(before);
    }
    if total(after) > 0.0 {
        share += joined / total(after);
    }
    share
}

/// One reply the failover probe received: when, for which of its sources, from which server
/// (the first word of the reply, `m<member>` for Manycast's reference service), and whether it
/// served the request (`<server> <n>`) rather than reset the session (`<server> reset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    pub at: Instant,
    pub source: usize,
    pub server: String,
    pub served: bool,
}

/// Parses a reply of the `<server> <n>` / `<server> reset` form; `None` for anything else.
pub fn parse_reply(payload: &[u8]) -> Option<(String, bool)> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let (server, rest) = text.split_once(' ')?;
    if server.is_empty() {
        return None;
    }
    match rest {
        "reset" => Some((server.to_owned(), false)),
        n if n.parse::<u64>().is_ok() => Some((server.to_owned(), true)),
        _ => None,
    }
}

/// Per source, the server of the last serving reply at or after `since`.
pub fn last_server(replies: &[ProbeReply], since: Instant) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    for r in replies.iter().filter(|r| r.served && r.at >= since) {
        out.insert(r.source, r.server.clone());
    }
    out
}

/// Time from `killed_at` until every one of `sources` has been served again by a server other
/// than `victim`; `None` while one of them has not.
pub fn recovery(
    replies: &[ProbeReply],
    killed_at: Instant,
    victim: &str,
    sources: &[usize],
) -> Option<Duration> {
    let mut worst = Duration::ZERO;
    for &s in sources {
        let first = replies
            .iter()
            .filter(|r| r.source == s && r.served && r.server != victim && r.at >= killed_at)
            .map(|r| r.at)
            .min()?;
        worst = worst.max(first - killed_at);
    }
    Some(worst)
}

/// The `p` quantile (0..=1) of `v` by nearest rank; 0 for no samples.
pub fn percentile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Writes the benchmark's final JSON line to `target/bench/NAME.json` and prints it last.
pub fn emit(name: &str, json: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    std::fs::write(dir.join(format!("{name}.json")), format!("{json}\n"))
        .expect("write the benchmark's JSON");
    println!("{json}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use igmp_ext::Slicing;

    fn equal(ids: &[u32]) -> Vec<(MemberId, u32)> {
        ids.iter().map(|&i| (MemberId(i), 1)).collect()
    }

    #[test]
    fn sources_come_from_delegated_space_only() {
        let mut rng = Rng::new(7);
        let s = allocated_sources(&mut rng, 2000);
        assert_eq!(s.len(), 2000);
        assert_eq!(s.iter().collect::<BTreeSet<_>>().len(), 2000, "distinct");
        for &a in &s {
            let ip = Ipv4Addr::from(a);
            assert!(
                !ip.is_private() && !ip.is_loopback() && !ip.is_multicast() && a < 0xf000_0000,
                "{ip} is not delegated space"
            );
        }
        assert!(is_allocated(u32::from(Ipv4Addr::new(8, 8, 8, 8))));
        assert!(!is_allocated(u32::from(Ipv4Addr::new(10, 1, 2, 3))));
        assert!(!is_allocated(u32::from(Ipv4Addr::new(232, 1, 1, 1))));
    }

    #[test]
    fn max_over_mean_of_known_loads() {
        assert_eq!(max_over_mean(&[1.0, 1.0, 1.0, 1.0]), 1.0);
        assert_eq!(max_over_mean(&[2.0, 1.0, 1.0, 0.0]), 2.0);
        assert_eq!(max_over_mean(&[]), 0.0);
        assert_eq!(max_over_mean(&[0.0, 0.0]), 0.0);
    }

    #[test]
    fn loads_add_weights_per_server() {
        let l = loads(2, &[10, 11, 12], &[1.0, 2.0, 4.0], |_, s| (s % 2) as usize);
        assert_eq!(l, vec![5.0, 2.0]);
    }

    #[test]
    fn zipf_weights_are_a_shuffled_harmonic_series() {
        let mut rng = Rng::new(1);
        let w = zipf_weights(&mut rng, 1000, 1.0);
        let mut sorted = w.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(sorted[0], 1.0);
        assert_eq!(sorted[1], 0.5);
        assert_eq!(sorted[999], 1.0 / 1000.0);
        assert_ne!(w, sorted, "ranks are shuffled over the sources");
    }

    #[test]
    fn maglev_fills_the_table_evenly_and_moves_little_on_removal() {
        let names: Vec<String> = (1..=4).map(|i| format!("server-{i}")).collect();
        let m = 65537;
        let t = Maglev::new(&names, m);
        let mut counts = [0usize; 4];
        for &b in t.table() {
            counts[b] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), m);
        // Turn-taking gives each backend m/n slots, give or take one.
        assert!(counts.iter().all(|&c| c.abs_diff(m / 4) <= 1), "{counts:?}");
        // Removing backend 3: its slots move, and few others do (the paper's Fig. 6 property).
        let t3 = Maglev::new(&names[..3], m);
        let others_moved = t
            .table()
            .iter()
            .zip(t3.table())
            .filter(|&(&a, &b)| a != 3 && a != b)
            .count();
        assert!(
            others_moved < m / 20,
            "{others_moved} non-victim slots moved"
        );
        assert!(t.lookup(0x0808_0808) < 4);
    }

    #[test]
    fn moved_share_counts_sources_whose_owner_changed() {
        let slicing = Slicing::LowOrder { bits: 2 };
        let before = Allocation::new(slicing, &equal(&[1, 2]));
        let after = before.rebalanced(&equal(&[1, 2, 3, 4]));
        // Units 0..3 one source each: exactly the units that changed hands move.
        let sources = [0u32, 1, 2, 3];
        let expect = before.moved(&after) as f64 / 4.0;
        assert_eq!(moved_share(&before, &after, &sources), expect);
        assert_eq!(moved_share(&before, &before, &sources), 0.0);
        let empty = Allocation::empty(slicing);
        assert_eq!(
            moved_share(&empty, &after, &sources),
            0.0,
            "no owner before"
        );
    }

    #[test]
    fn fair_share_is_the_joiners_or_leavers_weight_share() {
        assert_eq!(
            fair_share_moved(&equal(&[1, 2, 3, 4]), &equal(&[1, 2, 3])),
            0.25
        );
        assert_eq!(
            fair_share_moved(&equal(&[1, 2, 3, 4]), &equal(&[1, 2, 3, 4, 5])),
            0.2
        );
        let before = [(MemberId(1), 1), (MemberId(2), 3)];
        let after = [(MemberId(1), 1), (MemberId(2), 3), (MemberId(3), 4)];
        assert_eq!(fair_share_moved(&before, &after), 0.5);
        assert_eq!(fair_share_moved(&before, &before), 0.0);
    }

    #[test]
    fn replies_parse_or_are_refused() {
        assert_eq!(parse_reply(b"m2 17\n"), Some(("m2".into(), true)));
        assert_eq!(parse_reply(b"m1 reset\n"), Some(("m1".into(), false)));
        assert_eq!(parse_reply(b"m1 x"), None);
        assert_eq!(parse_reply(b"m1"), None);
        assert_eq!(parse_reply(b" 3"), None);
        assert_eq!(parse_reply(&[0xff, 0x20, 0x31]), None);
    }

    #[test]
    fn recovery_waits_for_every_victim_source_served_elsewhere() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let r = |ms, source, server: &str, served| ProbeReply {
            at: at(ms),
            source,
            server: server.into(),
            served,
        };
        let replies = vec![
            r(0, 0, "m1", true),
            r(0, 1, "m1", true),
            r(0, 2, "m2", true),
            // After the kill at 10: a late reply from the victim and a reset do not count.
            r(20, 0, "m1", true),
            r(30, 1, "m3", false),
            r(250, 0, "m2", true),
            r(300, 1, "m3", true),
            r(310, 0, "m2", true),
        ];
        let owners = last_server(&replies[..3], t0);
        assert_eq!(owners[&0], "m1");
        assert_eq!(owners[&2], "m2");
        assert_eq!(
            recovery(&replies, at(10), "m1", &[0, 1]),
            Some(Duration::from_millis(290))
        );
        assert_eq!(recovery(&replies[..6], at(10), "m1", &[0, 1]), None);
        assert_eq!(recovery(&replies, at(10), "m1", &[]), Some(Duration::ZERO));
    }

    #[test]
    fn percentile_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
