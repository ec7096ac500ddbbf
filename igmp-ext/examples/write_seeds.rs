//! Writes the fuzz seed corpus (valid signed IGMPv3 and MLDv2 joins, plain IGMP and MLD reports, queries,
//! certificates) into
//! `igmp-ext/fuzz/seeds/`. Run with `cargo run -p igmp-ext --example write_seeds`.

use igmp_ext::fixtures::{mld_spec_example, Fixture, NOW};
use igmp_ext::wire::igmp::{IgmpRepr, QueryRepr, QueryV3Fields};
use igmp_ext::wire::ipv6::{Ipv6Repr, NEXT_HEADER_ICMPV6, ROUTER_ALERT_MLD};
use igmp_ext::wire::mld::{self, MldRepr, ReportRepr, ALL_MLDV2_ROUTERS, ALL_NODES};
use igmp_ext::wire::record::{GroupRecordRepr, RecordType};
use igmp_ext::{SiteId, Slice, Slice6, SliceSet, SliceSet6, Slicing};
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Scope notices (SPEC.md §3.10) of `Fixture::routers(&[SiteId(1), SiteId(2)])`, as the
/// `scope_notice` target verifies them: the worked example's shape, a prefix slicing, an empty
/// scope, a 10-bit bitmap, and a notice beside a No-op TLV.
fn scope_notice_seeds() -> Vec<Vec<u8>> {
    let f = Fixture::routers(&[SiteId(1), SiteId(2)]);
    let low3 = Slicing::LowOrder { bits: 3 };
    let mut seeds = vec![
        f.scope_data(0, &f.scope_notice(SiteId(1), 3, low3, &[0, 2, 5])),
        f.scope_data(
            1,
            &f.scope_notice(SiteId(2), 4, Slicing::Prefix { bits: 4 }, &[1, 9]),
        ),
        f.scope_data(0, &f.scope_notice(SiteId(1), 5, low3, &[])),
        f.scope_data(
            1,
            &f.scope_notice(
                SiteId(2),
                6,
                Slicing::LowOrder { bits: 10 },
                &[0, 511, 1023],
            ),
        ),
    ];
    let mut noop = vec![0, 0, 0, 0];
    noop.extend_from_slice(&seeds[0]);
    seeds.push(noop);
    seeds
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let f = Fixture::new(2);
    let slicing = SliceSet::low_order_slicing(4);
    // A claim as a UNITS bitmap (SPEC.md §3.2), as the server sends it.
    let mut units4 = f.claims(&slicing[2..7], 2, NOW, 4);
    units4.as_units = true;
    let joins = [
        f.join(0, &[Slice::ALL], 1, 1),
        f.join(1, &slicing[..5], 2, 2),
        f.join(0, &[], 3, 3),
        f.datagram(1, &units4),
    ];
    let query = IgmpRepr::Query(QueryRepr {
        max_resp_code: 100,
        group: Ipv4Addr::UNSPECIFIED,
        v3: Some(QueryV3Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 125,
            sources: vec![Ipv4Addr::new(10, 0, 0, 1)],
            additional_data: vec![],
        }),
    });
    let mut q = vec![0u8; query.buffer_len()];
    query.emit(&mut q);
    let host: Ipv6Addr = "fe80::1".parse().expect("address");
    let report = MldRepr::V2Report(ReportRepr {
        flags: 0,
        records: vec![GroupRecordRepr {
            record_type: RecordType::ModeIsInclude,
            group: "ff3e::8000:1".parse().expect("address"),
            sources: vec!["2001:db8::1".parse().expect("address")],
            aux_data: vec![],
        }],
        additional_data: vec![],
    });
    let mld_query = MldRepr::Query(mld::QueryRepr {
        max_resp_code: 10_000,
        group: Ipv6Addr::UNSPECIFIED,
        v2: Some(mld::QueryV2Fields {
            flags: 0,
            suppress: false,
            qrv: 2,
            qqic: 125,
            sources: vec!["2001:db8::1".parse().expect("address")],
            additional_data: vec![],
        }),
    });
    let mld_datagram = |dst: Ipv6Addr, msg: &MldRepr| {
        let ip = Ipv6Repr {
            src_addr: host,
            dst_addr: dst,
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0,
            router_alert: Some(ROUTER_ALERT_MLD),
            payload_len: msg.buffer_len(),
        };
        let mut buf = vec![0u8; ip.buffer_len()];
        ip.emit(&mut buf);
        msg.emit(&mut buf[ip.header_len()..], host, dst);
        buf
    };
    let mld_seeds = vec![
        mld_datagram(ALL_MLDV2_ROUTERS, &report),
        mld_datagram(ALL_NODES, &mld_query),
        mld_datagram(ALL_MLDV2_ROUTERS, &report)[48..].to_vec(),
    ];
    let units6: Vec<Slice6> = SliceSet6::site_slicing(4);
    // A claim as a UNITS bitmap (SPEC.md §3.8), as the server sends it.
    let mut as_units = f.claims6(&units6[3..9], 2, NOW, 4);
    as_units.as_units = true;
    let mld_joins = vec![
        mld_spec_example(),
        f.datagram6(1, &f.claims6(&units6[..5], 2, NOW, 2)),
        f.datagram6(0, &f.claims6(&[], 3, NOW, 3)),
        f.datagram6(1, &as_units),
    ];
    let mld_seeds: Vec<Vec<u8>> = mld_seeds
        .into_iter()
        .chain(mld_joins.iter().map(|d| d[48..].to_vec()))
        .collect();
    for (target, items) in [
        ("mld_report", mld_seeds),
        ("signed_mld_join", mld_joins),
        ("signed_join", joins.to_vec()),
        (
            "igmp_report",
            joins.iter().map(|d| d[24..].to_vec()).chain([q]).collect(),
        ),
        (
            "certificate",
            f.members
                .iter()
                .chain(
                    &Fixture::dual_stack(
                        1,
                        SliceSet6::site_slicing(2)[..2].iter().copied().collect(),
                    )
                    .members,
                )
                // Router certificates (version 3, SPEC.md §4.3): sites 1 and 2.
                .chain(&Fixture::routers(&[SiteId(1), SiteId(2)]).members)
                .map(|m| m.cert.as_bytes().to_vec())
                .collect(),
        ),
        ("scope_notice", scope_notice_seeds()),
    ] {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        for (i, bytes) in items.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i}")), bytes)?;
        }
    }
    // The verifier's MLDv2 path target (`verifier/fuzz/fuzz_targets/mld_path.rs`): a control
    // byte, then length-prefixed datagrams; joins from the dual-stack fixture it verifies with.
    let d = Fixture::dual_stack(2, SliceSet6::full());
    let units = SliceSet6::site_slicing(2);
    let join0 = d.datagram6(0, &d.claims6(&units[..1], 1, NOW, 1));
    let join1 = d.datagram6(1, &d.claims6(&units[1..], 1, NOW, 2));
    let leave0 = d.datagram6(0, &d.claims6(&[], 2, NOW, 3));
    let mut units1 = d.claims6(&units[1..], 2, NOW, 4);
    units1.as_units = true;
    let units1 = d.datagram6(1, &units1);
    let framed = |control: u8, datagrams: &[&Vec<u8>]| {
        let mut out = vec![control];
        for g in datagrams {
            out.extend_from_slice(&(g.len() as u16).to_be_bytes());
            out.extend_from_slice(g);
        }
        out
    };
    let dir = root.join("../../../verifier/fuzz/seeds/mld_path");
    fs::create_dir_all(&dir)?;
    // One per burst on the members' link; two per burst with a tick after each; a leave.
    fs::write(dir.join("seed-join"), framed(1 << 3, &[&join0]))?;
    fs::write(
        dir.join("seed-two"),
        framed((2 << 3) | 4, &[&join0, &join1]),
    )?;
    fs::write(
        dir.join("seed-leave"),
        framed((1 << 3) | 4, &[&join0, &leave0]),
    )?;
    // A UNITS claim after a SLICES one, at a later epoch.
    fs::write(
        dir.join("seed-units"),
        framed((2 << 3) | 4, &[&join0, &units1]),
    )?;
    println!("seeds written to {}", root.display());
    Ok(())
}
