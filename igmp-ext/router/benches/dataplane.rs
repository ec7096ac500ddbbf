//! Placeholder until the dataplane benchmark lands (see igmp-ext/router/NOTES.md).
fn main() {}
