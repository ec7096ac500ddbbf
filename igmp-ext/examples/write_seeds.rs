//! Writes the fuzz seed corpus (valid signed joins, plain reports, queries, certificates) into
//! `igmp-ext/fuzz/seeds/`. Run with `cargo run -p igmp-ext --example write_seeds`.

use igmp_ext::fixtures::Fixture;
use igmp_ext::wire::igmp::{IgmpRepr, QueryRepr, QueryV3Fields};
use igmp_ext::{Slice, SliceSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let f = Fixture::new(2);
    let slicing = SliceSet::low_order_slicing(4);
    let joins = [
        f.join(0, &[Slice::ALL], 1, 1),
        f.join(1, &slicing[..5], 2, 2),
        f.join(0, &[], 3, 3),
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
    for (target, items) in [
        ("signed_join", joins.to_vec()),
        (
            "igmp_report",
            joins.iter().map(|d| d[24..].to_vec()).chain([q]).collect(),
        ),
        (
            "certificate",
            f.members
                .iter()
                .map(|m| m.cert.as_bytes().to_vec())
                .collect(),
        ),
    ] {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        for (i, bytes) in items.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i}")), bytes)?;
        }
    }
    println!("seeds written to {}", root.display());
    Ok(())
}
