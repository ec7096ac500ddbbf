//! Where a group's record lives in the zone (SPEC.md §8.2): under its service name and under a
//! reverse-style name built from the group address (IPv4: decimal octets under `g`, IPv6:
//! nibbles under `g6`). Sans-IO.

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use hickory_proto::rr::Name;
use igmp_ext::KeyId;

/// The label under the zone that holds reverse-style group-address names.
pub const GROUP_LABEL: &str = "g";
/// The label under the zone that holds the nibble names of IPv6 groups (SPEC.md §8.2).
pub const GROUP6_LABEL: &str = "g6";
/// The label under the zone that holds member certificates by member key id (SPEC.md §8.7).
pub const MEMBER_LABEL: &str = "m";

/// Why a name could not be built: the caller passed a label or zone that is not a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("'{0}' is not a service label (1 to 63 of a-z, 0-9, -)")]
    BadLabel(String),
    #[error("'{0}' is not a DNS name")]
    BadName(String),
}

/// Parses a zone name (absolute or not) into an absolute, lower-case name.
pub fn zone_name(zone: &str) -> Result<Name, NameError> {
    let mut name = Name::from_ascii(zone).map_err(|_| NameError::BadName(zone.to_owned()))?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err(NameError::BadName(zone.to_owned()));
    }
    Ok(name.to_lowercase())
}

/// `<name>.<zone>`: the service name; carries the record and the A record clients resolve.
pub fn service_name(zone: &Name, label: &str) -> Result<Name, NameError> {
    if !crate::record::is_service_label(label) {
        return Err(NameError::BadLabel(label.to_owned()));
    }
    Name::from_ascii(label)
        .and_then(|l| l.append_domain(zone))
        .map_err(|_| NameError::BadName(format!("{label}.{zone}")))
}

/// `<d>.<c>.<b>.<a>.g.<zone>` for group a.b.c.d, like `in-addr.arpa` (RFC 1035 §3.5): carries the
/// record and an A record of the group address. The verifier looks keys up here.
pub fn group_name(zone: &Name, group: Ipv4Addr) -> Name {
    let [a, b, c, d] = group.octets();
    Name::from_ascii(format!("{d}.{c}.{b}.{a}.{GROUP_LABEL}"))
        .and_then(|l| l.append_domain(zone))
        .expect("four decimal octets and a fixed label under a valid zone form a valid name")
}

/// The nibble name of IPv6 group `group`: its 32 hex digits, least significant first, one per
/// label, lower case, then `g6.<zone>`, as `ip6.arpa` names are formed (RFC 3596 §2.5). So
/// `ff3e::8000:1` is `1.0.0.0.0.0.0.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.3.f.f.g6.<zone>`.
/// Carries the record and an AAAA record of the group address.
pub fn group_name6(zone: &Name, group: Ipv6Addr) -> Name {
    let mut labels = String::with_capacity(64 + GROUP6_LABEL.len());
    for byte in group.octets().iter().rev() {
        let _ = write!(labels, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
    }
    labels.push_str(GROUP6_LABEL);
    Name::from_ascii(labels)
        .and_then(|l| l.append_domain(zone))
        .expect("32 hex-digit labels and a fixed label under a valid zone form a valid name")
}

/// The group-address name of `group`, of either family: [`group_name`] or [`group_name6`].
pub fn group_address_name(zone: &Name, group: IpAddr) -> Name {
    match group {
        IpAddr::V4(g) => group_name(zone, g),
        IpAddr::V6(g) => group_name6(zone, g),
    }
}

/// `<member key id>.m.<zone>`: carries the member's certificate record (SPEC.md §8.7).
pub fn member_name(zone: &Name, member: KeyId) -> Name {
    Name::from_ascii(format!("{member}.{MEMBER_LABEL}"))
        .and_then(|l| l.append_domain(zone))
        .expect("16 hex digits and a fixed label under a valid zone form a valid name")
}

/// True when `name` is one label under `m.<zone>`, where only certificate records may live.
pub fn is_member_name(zone: &Name, name: &Name) -> bool {
    let parent = Name::from_ascii(MEMBER_LABEL).and_then(|l| l.append_domain(zone));
    parent.is_ok_and(|p| p.zone_of(name) && name.num_labels() == p.num_labels() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let zone = zone_name("Groups.Manycast.Test").unwrap();
        assert_eq!(zone.to_string(), "groups.manycast.test.");
        assert_eq!(
            service_name(&zone, "web").unwrap().to_string(),
            "web.groups.manycast.test."
        );
        assert_eq!(
            group_name(&zone, Ipv4Addr::new(232, 1, 2, 3)).to_string(),
            "3.2.1.232.g.groups.manycast.test."
        );
        let member = member_name(&zone, KeyId([0xab, 1, 2, 3, 4, 5, 6, 0xff]));
        assert_eq!(
            member.to_string(),
            "ab010203040506ff.m.groups.manycast.test."
        );
        assert!(is_member_name(&zone, &member));
        assert!(is_member_name(&zone, &member.to_lowercase()));
        assert!(!is_member_name(&zone, &member.base_name()));
        assert!(!is_member_name(&zone, &service_name(&zone, "web").unwrap()));
        assert!(service_name(&zone, "a.b").is_err());
        assert_eq!(
            group_address_name(&zone, IpAddr::V4(Ipv4Addr::new(232, 1, 2, 3))),
            group_name(&zone, Ipv4Addr::new(232, 1, 2, 3))
        );
        assert!(zone_name(".").is_err());
        assert!(zone_name("a..b").is_err());
    }

    /// The worked example of SPEC.md §8.2.
    #[test]
    fn ipv6_group_nibble_name() {
        let zone = zone_name("groups.manycast.test").unwrap();
        let g: Ipv6Addr = "ff3e::8000:1".parse().unwrap();
        let name = group_name6(&zone, g);
        assert_eq!(
            name.to_string(),
            "1.0.0.0.0.0.0.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.3.f.f.g6.groups.manycast.test."
        );
        // 32 nibble labels, g6, then the zone's 3 labels.
        assert_eq!(name.num_labels(), 32 + 1 + 3);
        assert_eq!(group_address_name(&zone, IpAddr::V6(g)), name);
        // Every nibble is its own label, lower case; a different group is a different name.
        let g2: Ipv6Addr = "FF3E:ABCD::1".parse().unwrap();
        let name2 = group_name6(&zone, g2).to_string();
        assert!(
            name2.ends_with(".d.c.b.a.e.3.f.f.g6.groups.manycast.test."),
            "{name2}"
        );
        assert_eq!(name2, name2.to_lowercase());
        assert!(!is_member_name(&zone, &name));
    }
}
