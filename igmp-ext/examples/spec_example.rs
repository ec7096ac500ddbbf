//! Prints the worked examples of SPEC.md as hex, 16 bytes a line, so that the document can be
//! regenerated: `cargo run -p igmp-ext --example spec_example` for the IGMPv3 join of §7,
//! `... -- mld` for the MLDv2 join of §3.8, `... -- scope` for the scope notice of §3.10.

fn main() {
    let bytes = match std::env::args().nth(1).as_deref() {
        Some("mld") => igmp_ext::fixtures::mld_spec_example(),
        Some("scope") => igmp_ext::fixtures::scope_spec_example(),
        _ => igmp_ext::fixtures::spec_example(),
    };
    for chunk in bytes.chunks(16) {
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        println!("{}", line.join(" "));
    }
}
