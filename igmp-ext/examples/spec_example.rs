//! Prints the worked example of SPEC.md §7 as hex, 16 bytes a line, so that the document can
//! be regenerated: `cargo run -p igmp-ext --example spec_example`.

fn main() {
    for chunk in igmp_ext::fixtures::spec_example().chunks(16) {
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        println!("{}", line.join(" "));
    }
}
