//! Reading the kernel's multicast routing state back from `/proc/net/ip_mr_cache` and
//! `/proc/net/ip_mr_vif` (there is no netlink call that adds IPv4 MFC entries, but these files
//! show them with their packet counters). Parsing is pure and tested; reading is one call.

use std::net::Ipv4Addr;

/// One line of `/proc/net/ip_mr_cache` (resolved entries; unresolved ones have Iif -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLine {
    pub group: Ipv4Addr,
    pub source: Ipv4Addr,
    /// `None` for an unresolved entry.
    pub parent: Option<u16>,
    pub packets: u64,
    /// (vif, ttl threshold).
    pub oifs: Vec<(u16, u8)>,
}

/// One line of `/proc/net/ip_mr_vif`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifLine {
    pub vif: u16,
    pub ifname: String,
}

/// Addresses are printed as `%08X` of the network-order word, so in host byte order.
fn addr(hex: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(v.to_ne_bytes()))
}

pub fn parse_cache(text: &str) -> Vec<CacheLine> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let group = addr(f.next()?)?;
            let source = addr(f.next()?)?;
            let iif: i32 = f.next()?.parse().ok()?;
            let packets = f.next()?.parse().ok()?;
            let _bytes = f.next()?;
            let _wrong = f.next()?;
            let oifs = f
                .filter_map(|o| {
                    let (v, t) = o.split_once(':')?;
                    Some((v.parse().ok()?, t.parse().ok()?))
                })
                .collect();
            Some(CacheLine {
                group,
                source,
                parent: u16::try_from(iif).ok(),
                packets,
                oifs,
            })
        })
        .collect()
}

pub fn parse_vifs(text: &str) -> Vec<VifLine> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(VifLine {
                vif: f.next()?.parse().ok()?,
                ifname: f.next()?.to_owned(),
            })
        })
        .collect()
}

pub fn read_cache() -> Vec<CacheLine> {
    std::fs::read_to_string("/proc/net/ip_mr_cache")
        .map(|t| parse_cache(&t))
        .unwrap_or_default()
}

pub fn read_vifs() -> Vec<VifLine> {
    std::fs::read_to_string("/proc/net/ip_mr_vif")
        .map(|t| parse_vifs(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_and_vifs_as_the_kernel_prints_them() {
        let g = u32::from_ne_bytes([232, 1, 1, 1]);
        let s = u32::from_ne_bytes([10, 1, 0, 7]);
        let text = format!(
            "Group    Origin   Iif     Pkts    Bytes    Wrong Oifs\n\
             {g:08X} {s:08X} 2          5      420        0  1:1    3:1 \n\
             {g:08X} {s:08X} -1         0        0        0\n"
        );
        let lines = parse_cache(&text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].group, Ipv4Addr::new(232, 1, 1, 1));
        assert_eq!(lines[0].source, Ipv4Addr::new(10, 1, 0, 7));
        assert_eq!(lines[0].parent, Some(2));
        assert_eq!(lines[0].packets, 5);
        assert_eq!(lines[0].oifs, vec![(1, 1), (3, 1)]);
        assert_eq!(lines[1].parent, None);

        let vifs = parse_vifs(
            "Interface      BytesIn  PktsIn  BytesOut PktsOut Flags Local    Remote\n \
             0 c0                0       0         0       0 00008 00000005 00000000\n",
        );
        assert_eq!(
            vifs,
            vec![VifLine {
                vif: 0,
                ifname: "c0".into()
            }]
        );
    }
}
