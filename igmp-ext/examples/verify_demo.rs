//! `make demo` until the mininet lab lands: four members sign joins for their slices of the
//! client address space, the verifier accepts them and builds the ownership table, then a forged,
//! a replayed, a stale and an out-of-certificate join are each refused with a named reason.

use igmp_ext::fixtures::{Fixture, IFINDEX, NOW};
use igmp_ext::wire::igmp::fill_checksum;
use igmp_ext::{Accepted, JoinVerifier, SliceSet, VerifierConfig};
use std::net::Ipv4Addr;

fn main() {
    let f = Fixture::new(4);
    let keys = f.key_source();
    let mut v = JoinVerifier::new(VerifierConfig::default(), f.links());
    let units = SliceSet::low_order_slicing(3);
    println!(
        "group {} protected; group key id {}",
        f.group,
        f.group_keys().keys[0].id
    );

    let mut show = |label: &str, d: &[u8]| match v.handle_datagram(NOW, IFINDEX, d, &keys) {
        Ok(Accepted::Join { join, .. }) => println!(
            "  accept  {label:<34} {} at {} owns {}",
            join.member(),
            join.epoch(),
            join.slices()
        ),
        Ok(other) => println!("  accept  {label:<34} {other:?}"),
        Err(r) => println!("  reject  {label:<34} {r}"),
    };

    println!(
        "\nservers join with two eighths each, merged into one quarter (every fourth address):"
    );
    let mut joins = Vec::new();
    for i in 0..4 {
        let d = f.join(i, &[units[i], units[i + 4]], 1, i as u64);
        show(&format!("join from {}", f.members[i].addr), &d);
        joins.push(d);
    }

    println!("\nattacks:");
    // m2 widens its first slice from 0.0.0.1/0.0.0.7 to every odd address after signing. The
    // first slice entry's mask sits 38 bytes into the IGMP message (SPEC.md §3).
    let mut forged = f.join(1, &[units[1], units[5]], 1, 50);
    forged[24 + 38..24 + 42].copy_from_slice(&1u32.to_be_bytes());
    fill_checksum(&mut forged[24..]);
    show("forged (m2 widens its slice)", &forged);
    show("replayed (sent again)", &joins[2]);
    show(
        "stale epoch takes member 1's slice",
        &f.join(3, &[units[0]], 0, 99),
    );
    show(
        "conflict at the same epoch",
        &f.join(3, &[units[0]], 1, 100),
    );

    println!(
        "\nreallocation: epoch 2 moves slice {} from m1 to m4",
        units[4]
    );
    show(
        "m4 claims at epoch 2",
        &f.join(3, &[units[3], units[7], units[4]], 2, 101),
    );

    println!("\nownership table for {}:", f.group);
    let mut claims: Vec<_> = v.ownership().claims(f.group).collect();
    claims.sort_by_key(|(m, _)| *m);
    for (m, c) in claims {
        println!(
            "  {m}  {}  {:<40} via ifindex {} from {}",
            c.epoch,
            c.slices.to_string(),
            c.ifindex,
            c.sender
        );
    }
    for client in [
        Ipv4Addr::new(198, 51, 100, 8),
        Ipv4Addr::new(198, 51, 100, 12),
        Ipv4Addr::new(203, 0, 113, 77),
    ] {
        let owner = v
            .ownership()
            .owner_of(f.group, client)
            .map(|(m, _)| m.to_string());
        println!(
            "  client {client:<15} -> {}",
            owner.unwrap_or_else(|| "(nobody)".into())
        );
    }

    println!("\nmetrics:");
    let m = v.metrics();
    println!(
        "  accepted_joins {}  certificate_cache_hits {}",
        m.accepted_joins, m.certificate_cache_hits
    );
    for (reason, n) in m.rejections().filter(|(_, n)| *n > 0) {
        println!("  rejected{{reason=\"{reason}\"}} {n}");
    }
}
